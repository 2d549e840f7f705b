"""Module state stays bounded: a library call leaves no log handler behind, predict keeps few models."""
import logging

from wsolctl import pipeline


def test_a_call_closes_the_log_files_it_opened(tmp_path):
    logger = logging.getLogger("wsolctl")
    before = list(logger.handlers)

    @pipeline._closes_its_logs
    def command(out):
        out.mkdir()
        pipeline._log_to(out, "command")
        assert len(logger.handlers) == len(before) + 1
        return "done"

    for i in range(3):
        assert command(tmp_path / str(i)) == "done"
        assert logger.handlers == before
        assert "wsolctl command" in (tmp_path / str(i) / "wsolctl.log").read_text()


def test_predict_keeps_a_bounded_number_of_models(monkeypatch, tmp_path):
    from wsolctl.predict import model, run

    monkeypatch.setattr(run, "_MODELS", type(run._MODELS)())
    loads = []
    monkeypatch.setattr(model, "load_selected", lambda run_dir, *args: loads.append(run_dir) or object())
    for name in ("a", "b", "a", "c", "a"):
        run._init_worker(tmp_path / name, ("cam", None, "b-loc", "cpu", None))
    assert loads == [tmp_path / n for n in ("a", "b", "c")]  # "a" stayed: used most recently
    assert len(run._MODELS) == run.MAX_MODELS and [k[0] for k in run._MODELS] == [str(tmp_path / "c"), str(tmp_path / "a")]
