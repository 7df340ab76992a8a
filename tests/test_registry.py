import subprocess
import sys

import pytest

from spd_bench.errors import UserError
from spd_bench.registry import Registry, load_plugin
from spd_bench.tasks import expand_tasks


def test_lazy_entries_resolve_on_first_use():
    registry: Registry = Registry("thing", "spd_bench.nothing")
    registry.register("dumps", "json:dumps")
    assert registry.names() == ["dumps"]
    import json

    assert registry.get("dumps") is json.dumps


def test_unknown_name_suggests_close_matches_and_lists_all():
    registry: Registry = Registry("method", "spd_bench.nothing")
    for name in ("raw_sd", "spd", "base"):
        registry.register(name, object())
    with pytest.raises(UserError) as info:
        registry.check("raw-sd")
    message = str(info.value)
    assert "did you mean raw_sd" in message and "base, raw_sd, spd" in message


def test_decorator_registers():
    registry: Registry = Registry("method", "spd_bench.nothing")

    @registry.decorator("mine")
    class Mine:
        pass

    assert registry.get("mine") is Mine and registry.source("mine") == "plugin"


def test_unknown_task_names_groups_too():
    with pytest.raises(UserError, match="groups:"):
        expand_tasks(["no_such_task"])


def test_missing_plugin_file_fails_clearly(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_plugin(str(tmp_path / "nope.py"))


def test_help_and_list_do_not_import_torch():
    code = (
        "import sys\n"
        "from spd_bench.cli import main\n"
        "main(['list', 'methods'])\n"
        "main(['list', 'tasks'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "raw_sd" in result.stdout and "spd_random" in result.stdout
