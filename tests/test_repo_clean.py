"""The test suite writes only to temporary folders: tests/conftest.py compares git's view of the repository at the
session's start and end (in the controller under pytest-xdist) and fails the session on a difference. Here, that
comparison on a scratch repository."""

import subprocess

from conftest import repository_state, state_change


def test_the_repository_check_sees_a_changed_file_a_new_one_and_a_run_folders_content(tmp_path):
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("outputs/\n")
    (tmp_path / "tracked.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "start"], cwd=tmp_path, check=True)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "old.txt").write_text("")
    start = repository_state(tmp_path)
    assert state_change(start, repository_state(tmp_path)) == {}

    (tmp_path / "outputs" / "run").mkdir()
    (tmp_path / "outputs" / "run" / "prompt.safetensors").write_text("")  # inside an ignored folder a run writes to
    (tmp_path / "tracked.py").write_text("x = 2\n")
    (tmp_path / "stray.json").write_text("{}")
    (tmp_path / "outputs" / "old.txt").unlink()
    change = state_change(start, repository_state(tmp_path))
    assert change["new"] == [
        " M tracked.py", "!! outputs/run", "!! outputs/run/prompt.safetensors", "?? stray.json"
    ]  # fmt: skip
    assert change["gone"] == ["!! outputs/old.txt"]
