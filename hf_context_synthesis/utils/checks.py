"""Checks that fail before spending, each naming its setting: models and tokenizers resolve, Hub datasets
exist, folders are writable; :class:`SetupProblems` collects every problem and raises them together as one
:class:`RunSetupError` (one line per problem)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: A Hub repo id (``name`` or ``owner/name``).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class Problem:
    """One thing a run needs that is missing, unreachable or wrong.

    Args:
        setting: The setting or flag it concerns (``synthesis.seed``, ``evaluation.data_dir``, ``--seed``).
        message: What is wrong and how to fix it (one line).
        bad_value: ``True`` for a value that is invalid in itself (a settings error, exit 2); ``False`` for
            something missing or unreachable (a file, a model, an endpoint, a token; exit 1).
    """

    setting: str
    message: str
    bad_value: bool = False

    def line(self) -> str:
        """``"<setting>: <message>"`` (the message alone when it already starts with the setting)."""
        if not self.setting or self.message.startswith(f"{self.setting}:"):
            return self.message
        return f"{self.setting}: {self.message}"


def _problems_message(context: str, problems: Sequence[Problem]) -> str:
    if len(problems) == 1:
        return problems[0].line()
    return f"{context} found {len(problems)} problems:\n" + "\n".join(f"  - {p.line()}" for p in problems)


class RunSetupError(OSError):
    """Something a run needs is missing or unreachable (a model, a path, a token); found before any
    generation or training. An ``OSError`` like the loading error it replaces: the CLI prints it as an
    ``error:`` message and exits 1 (bad settings exit 2).

    :attr:`problems` lists every :class:`Problem` found (empty when raised with a plain message); the
    message then has one line per problem (see :class:`SetupProblems`).
    """

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems)


class SetupValueError(ValueError):
    """Like :class:`RunSetupError`, when every problem found is an invalid value (the CLI exits 2)."""

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems)


class SetupProblems:
    """Collects the problems of many checks and raises them together.

    Each check runs inside :meth:`check` (``with problems.check("synthesis.seed"): ...``): a
    :class:`RunSetupError`, another ``OSError`` (unreachable endpoint, permission), or a ``ValueError`` /
    ``TypeError`` (a bad value) raised inside is recorded as a :class:`Problem` of that setting and the
    next check runs. :meth:`raise_if_any` then raises one :class:`RunSetupError` listing all of them
    (``"<context> found N problems:"`` followed by ``"  - <setting>: <message>"`` lines; a single
    problem is its one line), or a :class:`SetupValueError` when every problem is a bad value.

    Args:
        context: What was checked, for the first line (``"recipe --dry-run"``, ``"synthesize"``).
    """

    def __init__(self, context: str) -> None:
        self.context = context
        self.problems: list[Problem] = []

    def __bool__(self) -> bool:
        return bool(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def add(self, setting: str, message: str, *, bad_value: bool = False) -> None:
        """Record one problem (``message``: one line naming the value and the fix)."""
        text = re.sub(r"\s*\n\s*", " ", str(message).strip()) or "failed"
        problem = Problem(setting, text, bad_value)
        if problem not in self.problems:
            self.problems.append(problem)
            logger.debug("setup problem: %s", problem.line())

    def about(self, *settings: str) -> bool:
        """Whether a problem of any of ``settings`` was recorded."""
        return any(p.setting in settings for p in self.problems)

    @contextlib.contextmanager
    def check(self, setting: str) -> Iterator[None]:
        """Run the ``with`` block; record what it raises as a problem of ``setting`` (see the class doc)."""
        try:
            yield
        except (RunSetupError, SetupValueError) as err:
            if err.problems:
                for p in err.problems:
                    self.add(p.setting, p.message, bad_value=p.bad_value)
            else:
                self.add(setting, str(err), bad_value=isinstance(err, ValueError))
        except (ValueError, TypeError) as err:
            self.add(setting, str(err) or type(err).__name__, bad_value=True)
        except OSError as err:
            self.add(setting, str(err) or type(err).__name__)

    def error(self) -> Exception | None:
        """The exception listing every problem, or ``None`` when there is none."""
        if not self.problems:
            return None
        message = _problems_message(self.context, self.problems)
        if all(p.bad_value for p in self.problems):
            return SetupValueError(message, self.problems)
        return RunSetupError(message, self.problems)

    def raise_if_any(self) -> None:
        """Raise :meth:`error` when any problem was recorded."""
        err = self.error()
        if err is not None:
            raise err


def short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = re.sub(r"\s+", " ", text)[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_model(name: str, *, what: str, step: str, setting_hint: str, kind: str = "model") -> str:
    """Raise :class:`RunSetupError` unless ``name`` loads: a local folder with a config/tokenizer file,
    or a Hub id whose ``config.json`` (``tokenizer_config.json`` for ``kind="tokenizer"``) can be had
    from the Hub or the local cache (``HF_HUB_OFFLINE=1`` uses the cache only). Returns the kind of
    source found (``"local"`` or ``"hub"``)."""
    from .packaged_models import OFFLINE_INSTALL_HINT, is_packaged_model, packaged_model_file

    if is_packaged_model(name):
        if packaged_model_file(str(name)) is None:
            raise RunSetupError(f"{step}: {what} {name!r} is not installed. Fix: {OFFLINE_INSTALL_HINT}")
        return "local"
    expanded = os.path.expanduser(str(name))
    wanted = ("tokenizer_config.json", "tokenizer.json", "config.json") if kind == "tokenizer" else ("config.json",)
    fix = (
        f"Fix: download it once with network access and set HF_HUB_OFFLINE=1, pass a local folder "
        f"(save_pretrained output), or choose another with {setting_hint}"
    )
    if os.path.isdir(expanded):
        if not any(os.path.isfile(os.path.join(expanded, w)) for w in wanted):
            raise RunSetupError(f"{step}: {what} {name!r} is a folder without {wanted[0]}. {fix}")
        return "local"
    looks_local = expanded.startswith((".", "/", "~")) or os.sep in expanded.strip("/").replace("/", "", 1) \
        or not HUB_ID.match(expanded)
    if looks_local:
        raise RunSetupError(f"{step}: {what} {name!r} is not a folder on this machine. {fix}")
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    for filename in wanted:  # the local cache first: no network needed
        if isinstance(try_to_load_from_cache(str(name), filename), str):
            return "cache"
    if constants.HF_HUB_OFFLINE:
        raise RunSetupError(f"{step}: {what} {name!r} is not in the local Hub cache and HF_HUB_OFFLINE is set. {fix}")
    reason = "not found"
    for filename in wanted:  # one HEAD request, no retries: a machine without network fails in seconds
        try:
            get_hf_file_metadata(hf_hub_url(str(name), filename), timeout=10)
            return "hub"
        except Exception as err:  # noqa: BLE001 - any failure means "cannot load"; the reason is shown
            kind = type(err).__name__
            if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                reason = f"the repository has no {filename}"
                continue  # the repo exists but lacks this file: try the next one
            reason = _REASONS.get(kind) or short_error(err)
            if kind not in _REASONS and not getattr(err, "response", None):
                reason = f"the Hub cannot be reached and it is not in the local cache ({short_error(err)})"
            break
    raise RunSetupError(f"{step}: cannot load {what} {name!r}: {reason}. {fix}")


_REASONS = {
    "RepositoryNotFoundError": "no such model repository on the Hub (or it is private: log in with `hf auth login`)",
    "GatedRepoError": "the repository is gated: accept its conditions on the Hub and log in with `hf auth login`",
    "LocalEntryNotFoundError": "the Hub cannot be reached and it is not in the local cache",
    "OfflineModeIsEnabled": "it is not in the local cache and HF_HUB_OFFLINE is set",
}


def check_output_writable(path: str | os.PathLike[str], step: str) -> None:
    target = Path(path).resolve()
    parent = target
    while not parent.exists():
        parent = parent.parent
    if target.exists() and not target.is_dir():
        raise RunSetupError(f"{step}: output {str(path)!r} exists and is not a folder")
    if not os.access(parent, os.W_OK):
        raise RunSetupError(f"{step}: cannot write under {str(parent)!r} (output {str(path)!r})")


def check_hub_dataset(repo_id: str, *, step: str, what: str, revision: str | None = None,
                      token: str | bool | None = None) -> list[str]:
    """Raise :class:`RunSetupError` unless the Hub (``HF_ENDPOINT``) has the dataset ``repo_id`` at
    ``revision``; returns its file names. Offline (``HF_HUB_OFFLINE=1``) the local Hub cache is asked
    instead (a snapshot downloaded before); nothing is downloaded."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached, whatever the library calls it
            raise RunSetupError(
                f"{step}: {what} {repo_id!r} is not in the local Hub cache and HF_HUB_OFFLINE is set; "
                "download it once with network access or pass a local folder"
            ) from None
        return [str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file()]
    try:
        info = HfApi(endpoint=constants.ENDPOINT).dataset_info(repo_id, revision=revision, token=token, timeout=10)
    except Exception as err:  # noqa: BLE001 - any failure means "cannot read it"; the reason is shown
        kind = type(err).__name__
        reasons = {
            "RepositoryNotFoundError": "no such dataset repository on the Hub (or it is private: log in with "
                                       "`hf auth login`)",
            "RevisionNotFoundError": f"the dataset has no revision {revision!r}",
            "GatedRepoError": "the dataset is gated: accept its conditions on the Hub and log in",
            "HFValidationError": "not a valid Hub dataset id",
        }
        reason = reasons.get(kind) or f"the Hub ({constants.ENDPOINT}) cannot be reached ({short_error(err)})"
        raise RunSetupError(f"{step}: cannot read {what} {repo_id!r} from the Hub: {reason}") from None
    return [s.rfilename for s in (info.siblings or [])]


def setting_name(name: str, setting_prefix: str = "--") -> str:
    """How the user sets field ``name``: ``--seed-revision`` (CLI flags) or ``synthesis.seed_revision``."""
    return f"--{name.replace('_', '-')}" if setting_prefix == "--" else f"{setting_prefix}{name}"
