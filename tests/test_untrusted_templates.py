"""Templates are data, never code (issue #17, part 1).

Every template a user can supply (synthesis / instruction-synthesis ``prompt_template``, task templates,
card templates) is rendered in jinja2's sandbox without a loader. Each probe below, as a hostile recipe
or Hub README would carry it, is tried through the Python API, ``context-synthesis synthesize
--dry-run``, ``context-synthesis run RECIPE --dry-run`` and ``load_dataset("context_synthesis", ...)``:
it must fail closed (no command run, no marker file written, no output folder), with one error line
naming the setting. A benign custom template keeps working.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
import yaml

import hf_context_synthesis  # noqa: F401 - registers the builder
from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.cli import main
from hf_context_synthesis.synthesis.prompts import PromptTemplateError, render_synthesis_messages, validate_prompt_template
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

DEAD_ENDPOINT = "http://127.0.0.1:9"  # nothing listens: a probe must be refused before any request

#: (id, template with MARKER for the marker file's path, text the error line must contain)
JINJA_PROBES = [
    ("cycler-popen", "{{ cycler.__init__.__globals__.os.popen('id > MARKER').read() }}{{ instruction }}{{ answer }}",
     "access to attribute '__init__' of class 'Cycler' is unsafe"),
    ("lipsum-globals", "{{ lipsum.__globals__ }}{{ instruction }}", "access to attribute '__globals__'"),
    ("self-init", "{{ self.__init__ }}{{ instruction }}", "access to attribute '__init__' of 'TemplateReference'"),
    ("str-mro", "{{ ''.__class__.__mro__ }}{{ instruction }}", "access to attribute '__class__' of 'str' object"),
    ("attr-filter", "{{ (instruction|attr('__class__')) }}", "access to attribute '__class__'"),
    ("format-string", "{{ '{0.__class__.__init__.__globals__}'.format(instruction) }}", "access to attribute '__class__'"),
    ("include", "{% include 'MARKER' %}{{ instruction }}", "{% include %} on line 1 is not allowed"),
    ("import", "{% import 'MARKER' as m %}{{ instruction }}", "{% import %} on line 1 is not allowed"),
    ("from-import", "{% from 'MARKER' import m %}{{ instruction }}", "{% from ... import %} on line 1 is not allowed"),
    ("extends", "{% extends 'MARKER' %}", "{% extends %} on line 1 is not allowed"),
    # an unsafe access in a branch the dry render does not take is refused too
    ("untaken-branch", "{% if task == 'never' %}{{ cycler.__init__.__globals__.os.popen('id > MARKER').read() }}"
     "{% endif %}{{ instruction }}", "access to attribute '__init__' is unsafe"),
    ("list-mutation", "{% set l = [] %}{{ l.append(instruction) }}", "access to attribute 'append' of 'list'"),
    ("huge-string", "{{ instruction * 100000000 }}", "repetition would build"),
    ("huge-power", "{{ ((10 ** 1000) ** 1000) ** 1000 }}", "power would build"),
    ("huge-loop", "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{{ instruction }}", "rendered text exceeds"),
]
JINJA_IDS = [p[0] for p in JINJA_PROBES]

#: (id, task template, text the error line must contain)
FORMAT_PROBES = [
    ("attribute", "{context.__class__.__init__.__globals__}", "field '{context.__class__.__init__.__globals__}'"),
    ("index", "{context} {input[0]}", "field '{input[0]}'"),
    ("conversion", "{context!r}", "field '{context!r}'"),
    ("spec", "{context:>{input}}", "field '{context:>{input}}'"),
    ("positional", "{context} {0}", "field '{0}'"),
    ("auto", "{context} {}", "field '{}'"),
    ("unknown", "{context} {os}", "field '{os}'"),
    ("two-contexts", "{context} {context}", "exactly once; it contains 2 times"),
]
FORMAT_IDS = [p[0] for p in FORMAT_PROBES]


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory, seeds_dir) -> Path:
    out = tmp_path_factory.mktemp("seeds")
    lines = (seeds_dir / "hotpotqa.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (out / "hotpotqa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _probe(template: str, marker: Path) -> str:
    return template.replace("MARKER", str(marker))


def _assert_listed(text: str, first: str, *needles: str) -> str:
    """The CLI's set-up error for a dead endpoint and a bad template: one line, or the list of every
    problem ("error: ... found N problems:" then "  - ..." lines) in which the template's problem is one
    item and every other item is the dead endpoint's. Returns the template's line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert "Traceback" not in text
    if len(lines) == 1:
        return _assert_one_line(text, first, *needles)
    assert re.fullmatch(r"error: .* found \d+ problems:", lines[0]), lines
    item = first.removeprefix("error: ")
    ours = [line for line in lines[1:] if item in line]
    assert len(ours) == 1 and ours[0].startswith("  - "), lines
    assert all(line in ours or line.startswith("  - --endpoint: ") for line in lines[1:]), lines
    for needle in needles:
        assert needle in ours[0], (needle, ours[0])
    return ours[0]


def _assert_one_line(text: str, *needles: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in text
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------- (a) Python API
@pytest.mark.parametrize(("name", "template", "expected"), JINJA_PROBES, ids=JINJA_IDS)
def test_prompt_template_probe_is_refused_by_the_api(tmp_path, seed_folder, name, template, expected):
    marker = tmp_path / "MARKER_FILE"
    marker_template = _probe(template, marker)
    with pytest.raises(PromptTemplateError) as exc:
        validate_prompt_template(marker_template)
    _assert_one_line(str(exc.value), "prompt_template: unsafe template (", expected)
    with pytest.raises(PromptTemplateError, match="prompt_template: unsafe template"):
        SynthesisConfig(seed=str(seed_folder), prompt_template=marker_template)
    with pytest.raises(ValueError, match="prompt_template: unsafe template"):  # a ValueError for every caller
        SynthesisConfig(seed=str(seed_folder), mode="instruction_synthesis", documents=str(seed_folder),
                        prompt_template=marker_template.replace("instruction", "chunk").replace("answer", "task"))
    assert not marker.exists()


@pytest.mark.parametrize(("name", "template", "expected"), JINJA_PROBES[:4], ids=JINJA_IDS[:4])
def test_render_refuses_the_probe_even_without_validation(tmp_path, name, template, expected):
    """The sandbox is the renderer itself, not only the validator: a template that reaches rendering
    unvalidated (a direct API call) is refused there too."""
    from hf_context_synthesis.synthesis.instructions import render_instruction_messages

    marker = tmp_path / "MARKER_FILE"
    with pytest.raises(PromptTemplateError, match="unsafe template"):
        render_synthesis_messages("q", "a", template=_probe(template, marker))
    with pytest.raises(PromptTemplateError, match="unsafe template"):
        render_instruction_messages("chunk", template=_probe(template, marker).replace("instruction", "chunk"))
    assert not marker.exists()


def test_an_unsafe_access_in_a_branch_taken_only_at_run_time_is_refused_when_rendering(tmp_path):
    from hf_context_synthesis.utils.templates import render_template

    marker = tmp_path / "MARKER_FILE"
    template = f"{{% if task == 'x' %}}{{{{ cycler.__init__.__globals__.os.popen('id > {marker}').read() }}}}{{% endif %}}"
    assert render_template(template, {"task": "y"}) == ""
    with pytest.raises(PromptTemplateError, match=r"^prompt_template: unsafe template \(access to attribute '__init__'"):
        render_template(template, {"task": "x"})
    assert not marker.exists()


@pytest.mark.parametrize(("name", "template", "expected"), FORMAT_PROBES, ids=FORMAT_IDS)
def test_task_template_probe_is_refused_by_the_api(seed_folder, name, template, expected):
    from hf_context_synthesis.synthesis.task_templates import render_task_prompt, validate_template

    with pytest.raises(PromptTemplateError) as exc:
        validate_template(template, "hotpotqa")
    _assert_one_line(str(exc.value), "task_templates['hotpotqa']: ", expected)
    with pytest.raises(ValueError, match=r"task_templates\['hotpotqa'\]"):
        SynthesisConfig(seed=str(seed_folder), task_templates={"hotpotqa": template})
    with pytest.raises(PromptTemplateError):  # the renderer refuses it as well: no str.format on user text
        render_task_prompt(template, ["doc"], "question")


def test_card_template_probes_are_refused_naming_the_file(tmp_path):
    from hf_context_synthesis.hub.cards import render_dataset_card, render_model_card

    marker = tmp_path / "MARKER_FILE"
    for name, template, expected in JINJA_PROBES:
        if name in ("huge-string", "list-mutation", "untaken-branch"):
            template = template.replace("instruction", "repo_id")
        path = tmp_path / f"{name}.md"
        path.write_text(_probe(template, marker), encoding="utf-8")
        for render in (
            lambda: render_dataset_card(repo_id="o/d", statistics={}, template_path=str(path)),
            lambda: render_model_card(repo_id="o/m", template_path=str(path)),
        ):
            with pytest.raises(PromptTemplateError) as exc:
                render()
            line = _assert_one_line(str(exc.value), f"template_path {str(path)!r}", "unsafe template (")
            if name != "untaken-branch":  # cards are not dry-rendered: the branch is not taken, so it renders
                assert expected in line, (name, line)
    assert not marker.exists()


def test_card_template_syntax_error_is_one_line_naming_the_file(tmp_path):
    from hf_context_synthesis.hub.cards import render_model_card

    path = tmp_path / "card.md"
    path.write_text("# {{ repo_id }\n", encoding="utf-8")
    with pytest.raises(PromptTemplateError) as exc:
        render_model_card(repo_id="o/m", template_path=str(path))
    _assert_one_line(str(exc.value), f"template_path {str(path)!r} is not a valid jinja2 template", "line 1")


# ---------------------------------------------------------------------------------------- (b) CLI flags
@pytest.mark.parametrize(("name", "template", "expected"), JINJA_PROBES, ids=JINJA_IDS)
def test_prompt_template_probe_fails_closed_in_synthesize_dry_run(tmp_path, capsys, seed_folder, name, template, expected):
    marker, out = tmp_path / "MARKER_FILE", tmp_path / "out"
    code = main(["synthesize", "--seed", str(seed_folder), "--endpoint", DEAD_ENDPOINT, "--output", str(out),
                 "--generation-cache-dir", str(tmp_path / "gen"), "--prompt-template", _probe(template, marker),
                 "--dry-run"])
    captured = capsys.readouterr()
    assert code != 0
    _assert_listed(captured.err, "error: prompt_template: unsafe template (", expected)
    assert not marker.exists() and not out.exists() and not (tmp_path / "gen").exists()


@pytest.mark.parametrize(("name", "template", "expected"), FORMAT_PROBES[:3], ids=FORMAT_IDS[:3])
def test_task_template_probe_fails_closed_in_synthesize_dry_run(tmp_path, capsys, seed_folder, name, template, expected):
    out = tmp_path / "out"
    code = main(["synthesize", "--seed", str(seed_folder), "--endpoint", DEAD_ENDPOINT, "--output", str(out),
                 "--task-templates", json.dumps({"hotpotqa": template}), "--dry-run"])
    assert code != 0
    _assert_listed(capsys.readouterr().err, "error: task_templates['hotpotqa']: ", expected)
    assert not out.exists()


# ---------------------------------------------------------------------------------------- (c) recipe YAML
def _recipe(tmp_path: Path, seed_folder: Path, **synthesis) -> tuple[Path, Path]:
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "output_dir": str(out),
        "synthesis": {"seed": str(seed_folder), "endpoint": DEAD_ENDPOINT,
                      "generation_cache_dir": str(tmp_path / "gen"), **synthesis},
    }), encoding="utf-8")
    return recipe, out


@pytest.mark.parametrize(("name", "template", "expected"), JINJA_PROBES, ids=JINJA_IDS)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_prompt_template_probe_in_a_recipe_fails_closed(tmp_path, capfd, seed_folder, name, template, expected, dry_run):
    marker = tmp_path / "MARKER_FILE"
    recipe, out = _recipe(tmp_path, seed_folder, prompt_template=_probe(template, marker))
    code = main(["run", str(recipe), "--steps", "synthesize", *(["--dry-run"] if dry_run else [])])
    assert code != 0
    _assert_one_line(capfd.readouterr().err, "prompt_template: unsafe template (", expected)
    assert not marker.exists() and not out.exists() and not (tmp_path / "gen").exists()


def test_task_template_probe_in_a_recipe_fails_closed(tmp_path, capfd, seed_folder):
    name, template, expected = FORMAT_PROBES[0]
    recipe, out = _recipe(tmp_path, seed_folder, task_templates={"hotpotqa": template})
    assert main(["run", str(recipe), "--steps", "synthesize", "--dry-run"]) != 0
    _assert_one_line(capfd.readouterr().err, "task_templates['hotpotqa']: ", expected)
    assert not out.exists()


# ---------------------------------------------------------------------------------------- (d) load_dataset
@pytest.mark.parametrize(("name", "template", "expected"), JINJA_PROBES, ids=JINJA_IDS)
def test_prompt_template_probe_fails_closed_in_load_dataset(tmp_path, seed_folder, name, template, expected):
    marker = tmp_path / "MARKER_FILE"
    caches = {"cache_dir": str(tmp_path / "ds-cache"), "generation_cache_dir": str(tmp_path / "gen")}
    with FakeTGIServer(latency=0.0) as srv:
        with pytest.raises(PromptTemplateError) as exc:
            datasets.load_dataset("context_synthesis", seed=str(seed_folder), endpoint=srv.url, split="train",
                                  prompt_template=_probe(template, marker), **caches)
        assert srv.stats().generation_requests == 0
    _assert_one_line(str(exc.value), "prompt_template: unsafe template (", expected)
    assert not marker.exists() and not (tmp_path / "gen").exists()


def test_task_template_probe_fails_closed_in_load_dataset(tmp_path, seed_folder):
    name, template, expected = FORMAT_PROBES[0]
    with FakeTGIServer(latency=0.0) as srv:
        with pytest.raises(PromptTemplateError, match=r"task_templates\['hotpotqa'\]: field"):
            datasets.load_dataset("context_synthesis", seed=str(seed_folder), endpoint=srv.url, split="train",
                                  task_templates={"hotpotqa": template}, cache_dir=str(tmp_path / "c"),
                                  generation_cache_dir=str(tmp_path / "gen"))
        assert srv.stats().generation_requests == 0


# ---------------------------------------------------------------------------------------- benign templates
BENIGN_PROMPT = (
    "{# a comment #}{% set words = context_words | int %}Context: [MISSING]\n"
    "Question: {{ instruction | trim }}\nAnswer: {{ answer }}\n"
    "{% for w in ['background', 'details'] %}- {{ w | upper }}\n{% endfor %}"
    "Task {{ task | default('none') }}: write about {{ words }} words ({{ '%d' | format(words // 2) }} per half)."
)


def test_benign_custom_templates_work_through_load_dataset(tmp_path, seed_folder):
    seen: list[str] = []
    srv = FakeTGIServer(latency=0.0, responder=lambda p: (seen.append(p.prompt), srv.default_response(p))[1])
    with srv:
        ds = datasets.load_dataset(
            "context_synthesis", seed=str(seed_folder), endpoint=srv.url, split="train", num_distractors=1,
            prompt_template=BENIGN_PROMPT, context_words=150,
            task_templates={"hotpotqa": "Docs {{literal}}:\n{context}\n\nQ: {input} -> {input}\nA:"},
            cache_dir=str(tmp_path / "c"), generation_cache_dir=str(tmp_path / "gen"),
        )
    assert len(ds) == 3 and len(seen) == 3
    row = ds[0]
    expected = render_synthesis_messages(row["instruction"], row["answer"], task="hotpotqa", context_words=150,
                                         template=BENIGN_PROMPT)[-1]["content"]
    assert expected.endswith("- BACKGROUND\n- DETAILS\nTask hotpotqa: write about 150 words (75 per half).")
    assert any(expected in prompt for prompt in seen)
    prompt = row["messages"][0]["content"]
    assert prompt.startswith("Docs {literal}:\n")
    assert prompt.endswith(f"\n\nQ: {row['instruction']} -> {row['instruction']}\nA:")
    assert prompt[slice(*row["context_spans"][row["relevant_index"]])] == row["relevant_context"]


def test_benign_template_dry_run_succeeds(tmp_path, capsys, seed_folder):
    with FakeTGIServer(latency=0.0) as srv:
        code = main(["synthesize", "--seed", str(seed_folder), "--endpoint", srv.url, "--output", str(tmp_path / "o"),
                     "--generation-cache-dir", str(tmp_path / "gen"), "--prompt-template", BENIGN_PROMPT, "--dry-run"])
        assert srv.stats().generation_requests == 0
    assert code == 0
    assert "requests: 3 to make" in capsys.readouterr().out


def test_benign_card_template_file_renders(tmp_path):
    from hf_context_synthesis.hub.cards import render_model_card

    path = tmp_path / "card.md"
    path.write_text("---\n{{ card_data }}\n---\n# {{ title }}\n{% if nothing_here %}x{% endif %}done\n", encoding="utf-8")
    text = render_model_card(repo_id="o/my-model", template_path=str(path))
    assert "# my-model\ndone" in text


def test_task_template_fields_are_filled_by_substitution_not_str_format():
    """Braces in documents and instructions are kept; escaped braces in the template become single ones;
    the output equals ``str.format`` on every accepted template."""
    from hf_context_synthesis.synthesis.task_templates import GENERIC_TEMPLATE, LONGBENCH_TEMPLATES, render_task_prompt

    docs, question = ["a {b} c", "{input} {context}"], "what is {x.__class__}?"
    for template in [*LONGBENCH_TEMPLATES.values(), GENERIC_TEMPLATE, "{{x}} {context} {{{input}}}"]:
        prompt, spans = render_task_prompt(template, docs, question, expose_instruction=False)
        assert prompt == template.format(context="\n\n".join(docs), input=question)
        assert [prompt[s:e] for s, e in spans] == docs
