"""The run folder: file names that finished studies already hold, the finished marker, atomic writes."""

import pytest

from spot_core.run_dir import RunDir, write_atomic


def test_file_names_are_the_ones_finished_runs_hold(tmp_path):
    run = RunDir(tmp_path / "cell")
    names = {
        run.result_file: "result.json",
        run.metrics: "metrics.json",
        run.resume: "resume.pt",
        run.initial_prompt: "initial_prompt.safetensors",
        run.task_embedding: "task_embedding.safetensors",
        run.best_prompt: "best_prompt.safetensors",
        run.final_prompt: "final_prompt.safetensors",
        run.projected_prompt: "projected_prompt.safetensors",
        run.projector: "projector.safetensors",
        run.neurons: "neurons.safetensors",
    }
    for path, name in names.items():
        assert path == tmp_path / "cell" / name
    assert run.checkpoint(40) == tmp_path / "cell/checkpoints/step_0000040.safetensors"


def test_finish_marks_the_run_finished_with_the_same_bytes_as_before(tmp_path):
    run = RunDir(tmp_path / "cell")
    assert not run.finished()
    run.finish({"best/val_score": 81.5, "best/step": 4})
    assert run.finished() and run.result() == {"best/val_score": 81.5, "best/step": 4}
    assert (tmp_path / "cell/result.json").read_text() == '{\n "best/val_score": 81.5,\n "best/step": 4\n}\n'
    assert sorted(p.name for p in (tmp_path / "cell").iterdir()) == ["result.json"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_file_and_no_temporary_one(tmp_path):
    path = write_atomic(tmp_path / "a/resume.pt", lambda tmp: tmp.write_bytes(b"old"))

    def half_then_fail(tmp):
        tmp.write_bytes(b"ne")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_fail)
    assert path.read_bytes() == b"old" and [p.name for p in path.parent.iterdir()] == ["resume.pt"]
