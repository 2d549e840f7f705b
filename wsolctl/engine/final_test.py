"""Model selection and the final test: load each method's B-LOC / B-CL checkpoint of a finished
run, score it on ``test`` once, and keep the rows (cached per run, so reruns are cheap) with each
selected model's per-image statistics (:meth:`RunDir.write_test_images`: what confidence intervals
resample, :mod:`wsolctl.results.bootstrap`)."""
from __future__ import annotations

from pathlib import Path

import torch

from wsolctl import metrics as registry
from wsolctl.engine.build import Data, build_model
from wsolctl.engine.evaluate import evaluate
from wsolctl.engine.plan import RunSpec, same_test_settings, test_settings
from wsolctl.engine.pseudo import OTSU_COLUMNS, Otsu, at_rule, threshold_columns
from wsolctl.engine.rundir import MethodInfo, RunDir, TestScores
from wsolctl.metrics import ACCURACY, BASELINE, UNTRAINED, PxAP
from wsolctl.progress import Progress
from wsolctl.selection import CHECKS, RULES


def select_run(spec: RunSpec, data: Data, run: RunDir, device: torch.device, progress: Progress) -> TestScores:
    """The final test of one finished run's selected models (cached in the run directory)."""
    recipe = spec.recipe
    settings = test_settings(recipe)
    cached = run.test_scores()
    if cached is not None and same_test_settings(cached.settings, settings):
        return cached  # else: scored with other test-time metrics or examples
    best = run.done().best
    model = build_model(spec, len(data.classes), pretrained=False).to(device)  # checkpoints replace every weight
    baseline = data.all_foreground_pxap(recipe.evaluation.thresholds)
    out = TestScores(settings=settings, methods={label: method_info(method.plugin)
                                                 for label, method in zip(spec.labels, spec.methods)})
    by_epoch: dict[int, list[tuple[str, str]]] = {}
    for label in spec.labels:
        for rule, epoch in best[label].items():
            if rule in recipe.selection:
                by_epoch.setdefault(epoch, []).append((label, rule))
    validation = {(row["method"], row["epoch"]): row for row in run.epochs()}
    metrics = [*registry.chosen(recipe.evaluation.metrics), Otsu]  # Otsu: internal, for the threshold rules
    examples = _example_batch(data, recipe.evaluation.examples_per_class, run.example_images())
    for epoch, picks in sorted(by_epoch.items()):
        model.load_state_dict(run.state(epoch, device))
        labels = {label for label, _ in picks}
        methods = {label: method.instantiate() for label, method in zip(spec.labels, spec.methods) if label in labels}
        for method in (model.method, *methods.values()):
            method.set_epoch(epoch)
        _save_example_cams(model, methods, picks, examples, device, run)
        scores = evaluate(model, methods, data.test, device, accuracy=True, localize=True,
                          thresholds=recipe.evaluation.thresholds, cam_target=recipe.evaluation.cam_target,
                          progress=progress, description=f"run {spec.run_id}: test @ epoch {epoch}",
                          metrics=metrics, settings=recipe.evaluation, per_image=True)
        for label, rule in picks:
            run.write_test_images(label, rule, scores.images, scores.statistics[label])
            result = scores.localization[label]
            measured = dict(scores.metrics[label])
            otsu = {k: measured.pop(k) for k in OTSU_COLUMNS}
            thresholds = threshold_columns(result, otsu, validation[(label, epoch)])
            threshold_rule = RULES[rule].threshold_rule(recipe.evaluation.pseudo_threshold)  # sets its τ
            columns = {**{c.name: getattr(result, c.name) for c in PxAP.columns}, **measured}
            columns.update({k: v for k, v in at_rule(result, threshold_rule, thresholds).items() if k in columns})
            out.results.append({"method": label, "selection": rule, "epoch": epoch, **columns,
                                "threshold_rule": threshold_rule, **thresholds,
                                ACCURACY.name: scores.accuracy, BASELINE.name: baseline})
            curves = {k: [float(x) for x in v] for k, v in result.curves.items()}
            out.curves.append({"method": label, "selection": rule, **curves})
        for check in recipe.evaluation.checks:
            out.checks.extend(CHECKS[check].run()(spec, model, methods, picks, data, device, run))
    untrained = untrained_pxap(spec, model, data, run, device, progress)
    for row in out.results:
        row[UNTRAINED.name] = untrained.get(row["method"])
    run.write_test_scores(out)
    return out


def untrained_pxap(spec: RunSpec, model, data: Data, run: RunDir, device: torch.device,
                   progress: Progress) -> dict[str, float]:
    """Test PxAP of each method's maps from the run's epoch-0 checkpoint (the seeded, unfitted model:
    the report's untrained reference row); empty for runs trained before that checkpoint was kept."""
    if not run.checkpoint(0).is_file():
        return {}
    model.load_state_dict(run.state(0, device))
    methods = {label: method.instantiate() for label, method in zip(spec.labels, spec.methods)}
    for method in (model.method, *methods.values()):
        method.set_epoch(0)
    ev = spec.recipe.evaluation
    scores = evaluate(model, methods, data.test, device, accuracy=False, localize=True, thresholds=ev.thresholds,
                      cam_target=ev.cam_target, progress=progress, description=f"run {spec.run_id}: test @ epoch 0 (untrained)")
    return {label: result.pxap for label, result in scores.localization.items()}


def method_info(plugin) -> MethodInfo:
    """What the report reads of a method plugin: its kind, and whether the survey has it (set on
    the class itself: a subclass of a survey method is not one)."""
    return MethodInfo(getattr(plugin, "kind", "other"), bool(vars(plugin).get("in_survey", False)))


def randomisation_check(spec: RunSpec, model, methods: dict, picks: list[tuple[str, str]], data: Data, device,
                        run: RunDir) -> list[dict]:
    """The cascading randomisation check of each picked (method, rule) on a seeded test subset
    (rows for checks.parquet; the maps per depth in :meth:`RunDir.check_maps`)."""
    import numpy as np

    from wsolctl.engine.checks import check_subset, model_randomisation

    recipe = spec.recipe
    dataset = data.test.dataset
    chosen = check_subset(len(dataset), recipe.evaluation.check_images, recipe.seed)
    images, labels, _ = zip(*(dataset[i] for i in chosen))
    images, labels = torch.stack(images).to(device), torch.tensor(labels, device=device)
    if recipe.evaluation.cam_target == "predicted":
        with torch.no_grad():
            labels = model.eval()(images).logits.argmax(dim=1)
    stages = [stage.module for stage in model.info.stages]
    rows = []
    for label, rule in picks:
        found, maps = model_randomisation(model, methods[label], images, labels, stages, recipe.seed)
        rows += [{"method": label, "selection": rule, **row} for row in found]
        path = run.check_maps(label, rule)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, maps=maps, layers=np.array([r["layer"] for r in found]),
                            kind=methods[label].map_kind)
    return rows


def _example_batch(data: Data, per_class: int, path: Path):
    """The first ``per_class`` test images of each class (deterministic), saved once for reports:
    uint8 RGB images (un-normalised with the normalisation they were given, recorded as ``mean`` and
    ``std``), boolean masks, labels and ids."""
    import numpy as np

    from wsolctl.data.images import unnormalize

    dataset = data.test.dataset
    chosen = [i for label in sorted(data.classes.values())
              for i in [j for j, s in enumerate(dataset.samples) if s.label == label][:per_class]]
    if not chosen:
        return None
    images, labels, masks = zip(*(dataset[i] for i in chosen))
    images, labels, masks = torch.stack(images), torch.tensor(labels), torch.stack(masks)
    rgb = unnormalize(images, dataset.normalization)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=(rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8),
                        masks=masks.numpy(), labels=labels.numpy(),
                        ids=np.array([dataset.samples[i].image for i in chosen]),
                        mean=np.array(dataset.normalization.mean), std=np.array(dataset.normalization.std))
    return images, labels, masks


def _save_example_cams(model, methods: dict, picks: list[tuple[str, str]], examples, device, run: RunDir) -> None:
    """Each selected model's maps on the example images as scored (CAM-type min-max normalised,
    probabilities raw; uint8, ×255) with their ``kind``, for qualitative figures."""
    import numpy as np

    from wsolctl.metrics import prepare_cams

    if examples is None:
        return
    images, labels, masks = examples
    model.eval()
    for label, rule in picks:
        with torch.no_grad():
            cams = methods[label].cams(model, images.to(device), labels.to(device))
        kind = methods[label].map_kind
        cams = prepare_cams(cams, masks.shape[-2:], kind).cpu().numpy()
        path = run.example_maps(label, rule)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, cams=(cams * 255).round().astype(np.uint8), kind=kind)
