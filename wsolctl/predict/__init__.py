"""Apply a trained model to whole slides and images: heatmaps, regions and slide-level scores.

``predict(run_dir, inputs, out, PredictOptions(...))`` is what ``wsolctl predict`` runs;
:func:`load_selected` rebuilds one selected model of a study output directory. See docs/predict.md.
"""
from wsolctl.predict.inputs import PredictOptions, discover_inputs
from wsolctl.predict.model import LoadedModel, TileScorer, load_selected
from wsolctl.predict.run import Predictions, predict

__all__ = ["LoadedModel", "PredictOptions", "Predictions", "TileScorer", "discover_inputs", "load_selected", "predict"]
