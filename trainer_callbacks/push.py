"""Push the model, tokenizer and a model card to the Hub from inside ``transformers.Trainer`` / TRL's ``SFTTrainer``.

:class:`HubPushCallback` pushes (with :func:`hf_context_synthesis.hub.publish.upload_folder_as_one_commit`, one
commit per push, transient errors retried):

* at every checkpoint save (``push_on_save=True``): the ``checkpoint-<step>`` folder the Trainer just wrote,
  with commit message ``"Training in progress, step N"``;
* at the end of training (``push_at_end=True``, the default): the model and ``processing_class`` as they
  are then, the trainer state and, when the output folder has it, ``context_synthesis_training.json``.
  They are **saved first** into ``args.output_dir`` (``save_pretrained``), and pushed from there after.

The card shows the training hyperparameters (from the trainer's arguments), the loss curve from
``state.log_history``, the synthesized dataset, the base model and, when given, evaluation results.

With ``background=True`` the files are snapshotted synchronously (the weights keep changing) and the upload
runs in ``HfApi.run_as_future`` (one background thread, pushes in order), so training is not blocked; at
train end the callback waits for every pending push. A push failure never loses the trained model and
never raises out of ``trainer.train()``: the model is already saved locally, the failure is reported in
one ``ERROR`` log line (naming the folder and the command that pushes it later) and kept in
``callback.push_error``. Only the main process (``state.is_world_process_zero``) saves and pushes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_context_synthesis.hub.publish import (
    TRAINER_STATE_FILE,
    HubPublishError,
    hub_api,
    hyperparameters_from_args,
    prepare_model_folder,
    upload_folder_as_one_commit,
)

logger = logging.getLogger(__name__)

__all__ = ["HubPushCallback"]


class HubPushCallback(TrainerCallback):
    """Push model + tokenizer + model card to ``repo_id`` at save and/or at train end.

    Args:
        repo_id: ``"namespace/name"`` of the model repo (created if missing).
        token: Hub token (default: ``HF_TOKEN`` or the login cache). Never logged.
        private: Create the repo private.
        push_on_save: Push each ``checkpoint-<step>`` folder when the Trainer saves it.
        push_at_end: Push the final model and tokenizer at the end of training.
        background: Upload in a background thread (``HfApi.run_as_future``); wait at train end.
        dataset_repo_id: Hub id of the synthesized training data (card ``datasets``).
        base_model: Hub id of the model being fine-tuned (card ``base_model``).
        eval_results: ``huggingface_hub.EvalResult`` list or an ``EvalReport`` (card ``model-index``).
        revision: Branch to push to (created if missing).
        endpoint: Hub URL (default: ``HF_ENDPOINT``).
        max_attempts / backoff_base: Retries of each commit on transient errors.
        card_kwargs: ``license``, ``language``, ``tags``, ``description`` for the model card.

    After training, ``callback.commits`` holds the ``CommitInfo`` of every push, in order, and
    ``callback.push_error`` the one-line failure report (``None`` when every push succeeded).
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = False,
        push_on_save: bool = False,
        push_at_end: bool = True,
        background: bool = False,
        dataset_repo_id: str | Sequence[str] | None = None,
        base_model: str | None = None,
        eval_results: Any = None,
        revision: str | None = None,
        endpoint: str | None = None,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        card_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.private = private
        self.push_on_save = push_on_save
        self.push_at_end = push_at_end
        self.background = background
        self.dataset_repo_id = dataset_repo_id
        self.base_model = base_model
        self.eval_results = eval_results
        self.revision = revision
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.card_kwargs = dict(card_kwargs or {})
        self._api = hub_api(token, endpoint)  # holds the token; never printed
        self._pending: list[tuple[int, Future]] = []
        self._errors: list[str] = []
        self.commits: list[Any] = []
        #: One-line report of the pushes that failed (``None``: none failed).
        self.push_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(repo_id={self.repo_id!r}, push_on_save={self.push_on_save}, "
            f"push_at_end={self.push_at_end}, background={self.background})"
        )

    # ------------------------------------------------------------------ pushing
    def _upload(self, folder: str, message: str) -> Any:
        try:
            return upload_folder_as_one_commit(
                folder, self.repo_id, repo_type="model", private=self.private, revision=self.revision,
                commit_message=message, max_attempts=self.max_attempts, backoff_base=self.backoff_base,
                api=self._api,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _push(self, source: Path, args: TrainingArguments, state: TrainerState, message: str) -> None:
        staging = tempfile.mkdtemp(prefix="context-synthesis-hub-")
        try:
            prepare_model_folder(
                source, staging, repo_id=self.repo_id, dataset_repo_id=self.dataset_repo_id,
                eval_results=self.eval_results, base_model=self.base_model,
                hyperparameters=hyperparameters_from_args(args), log_history=state.log_history,
                **self.card_kwargs,
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.background:
            logger.info("Pushing %s to %s in the background (step %d)", source.name, self.repo_id, state.global_step)
            self._pending.append((state.global_step, self._api.run_as_future(self._upload, staging, message)))
            return
        self.commits.append(self._upload(staging, message))

    def wait(self) -> list[Any]:
        """Wait for the background pushes; raise :class:`HubPublishError` if any push failed."""
        pending, self._pending = self._pending, []
        for step, future in pending:
            try:
                self.commits.append(future.result())
            except HubPublishError as err:
                self._errors.append(f"push at step {step} failed: {err}")
                logger.error("Hub push of %s at step %d failed: %s", self.repo_id, step, err)
        if self._errors:
            errors, self._errors = self._errors, []
            raise HubPublishError("; ".join(errors)) from None
        return self.commits

    # ------------------------------------------------------------------ events
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if not self.push_on_save or not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not (checkpoint / "config.json").is_file():
            logger.warning("HubPushCallback: no model checkpoint at %s; nothing pushed", checkpoint)
            return
        try:
            self._push(checkpoint, args, state, f"Training in progress, step {state.global_step}")
        except HubPublishError as err:
            self._errors.append(f"push at step {state.global_step} failed: {err}")
            logger.error("Hub push of %s at step %d failed: %s", self.repo_id, state.global_step, err)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ):
        local = Path(args.output_dir)
        errors: list[str] = []
        if self.push_at_end and state.is_world_process_zero:
            if model is None:
                errors.append("HubPushCallback got no model at train end: nothing saved or pushed")
            else:
                # Save first: whatever happens to the push, the trained model is on disk.
                local.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(local)
                if processing_class is not None and hasattr(processing_class, "save_pretrained"):
                    processing_class.save_pretrained(local)
                state.save_to_json(str(local / TRAINER_STATE_FILE))
                try:
                    self._push(local, args, state, f"End of training (step {state.global_step})")
                except Exception as err:  # noqa: BLE001 - a push failure must not lose the model
                    errors.append(f"end-of-training push failed: {type(err).__name__}: {err}")
        try:
            self.wait()
        except Exception as err:  # noqa: BLE001
            errors.append(str(err))
        if errors:
            from hf_context_synthesis.utils.secrecy import redact

            detail = " ".join("; ".join(errors).split())  # one line
            self.push_error = redact(
                f"Hub push to {self.repo_id} failed ({detail}); the model is saved in {local}: push it later with "
                f"`context-synthesis push-model {local} {self.repo_id}`"
            )
            logger.error("%s", self.push_error)
