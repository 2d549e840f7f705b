"""Top-down methods beyond the survey (issue 18): parity with pytorch-grad-cam 1.5.7 on a trained small
ResNet and on a timm ViT (with its ``reshape_transform``), hand oracles where pytorch-grad-cam has no
method or cannot run (attention rollout, ShapleyCAM on a ViT), batching, and the binary-task cases."""
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAMElementWise,
    HiResCAM,
    ShapleyCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
from torch import nn

from tests.test_topdown import oracle_g_a, small_net
from wsolctl import plugins
from wsolctl.explain import cams
from wsolctl.methods import eigencam

SIZE = 32
PGC = {"hirescam": HiResCAM, "gradcamelementwise": GradCAMElementWise, "eigencam": EigenCAM,
       "eigengradcam": EigenGradCAM, "kpcacam": KPCA_CAM, "fem": FEM, "shapleycam": ShapleyCAM,
       "fullgrad": FullGrad, "finercam": FinerCAM}
SIGNLESS = ("eigencam", "eigengradcam", "kpcacam")  # a principal component's sign is a convention


def toy_data(n: int, seed: int):
    """3 classes: a bright square in the top-left, bottom-right, or none; noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g) * 0.5
    y = torch.arange(n) % 3
    x[y == 0, :, 2:14, 2:14] += 2.0
    x[y == 1, :, 18:30, 18:30] += 2.0
    return x, y


@pytest.fixture(scope="module")
def resnet():
    """timm's test-sized ResNet, trained for a few steps so that its maps follow the objects."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = toy_data(36, 0)
    model.train()
    for step in range(12):
        i = torch.arange(12) + 12 * (step % 3)
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    model.eval()
    xt, yt = toy_data(6, 1)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() >= 0.5  # it has learnt something
    return model, model.layer2, xt, yt, None  # 4×4 maps: FEM needs more than 1 + k² positions


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=64).eval()
    grid = model.patch_embed.grid_size

    def reshape_transform(t):  # pytorch-grad-cam's ViT tutorial
        return t[:, 1:].reshape(t.shape[0], *grid, t.shape[2]).permute(0, 3, 1, 2)

    x, y = toy_data(4, 2)
    return model, model.blocks[-1].norm1, F.interpolate(x, size=64), y, reshape_transform


def scaled(maps: torch.Tensor, size) -> np.ndarray:
    """Bilinear resize to the input and min-max, as pytorch-grad-cam returns its maps."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].flatten(1)
    low, high = up.min(1, keepdim=True)[0], up.max(1, keepdim=True)[0]
    return ((up - low) / (high - low).clamp_min(1e-7)).numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> list[float]:
    """r per map; two constant maps (a class with no evidence: all 0 after the ReLU) count as equal."""
    b = b.reshape(len(b), -1)
    return [float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0
            else (1.0 if np.allclose(x, y, atol=1e-5) else -1.0) for x, y in zip(a, b)]


def theirs(name, model, layer, x, targets, reshape):
    targets_pgc = [ClassifierOutputTarget(int(t)) for t in targets]
    if name == "finercam":  # the target class against the closest ones, as FinerCAM builds it
        with torch.no_grad():
            logits = model(x)
        order = (logits - logits.gather(1, targets[:, None])).abs().argsort(1)
        targets_pgc = [FinerWeightedTarget(int(t), [int(j) for j in order[i, 1:4]], 1.0) for i, t in enumerate(targets)]
    with PGC[name](model=model, target_layers=[layer], reshape_transform=None if name == "fullgrad" else reshape) as obj:
        return obj(input_tensor=x, targets=targets_pgc)


def ours(name, model, layer, x, targets, **params):
    with torch.no_grad():  # as the engine calls them
        return cams(model, x, targets, method=name, layer=None if name == "fullgrad" else layer, **params)


def assert_parity(name, setup, monkeypatch, **params):
    model, layer, x, targets, reshape = setup
    expected = theirs(name, model, layer, x, targets, reshape)
    got = ours(name, model, layer, x, targets, **params)
    assert torch.isfinite(got).all() and got.amax() > 0
    r = pearson(scaled(got, x.shape[-2:]), expected)
    if name in SIGNLESS:  # equal up to the component's sign: the other sign's map matches instead
        original = eigencam.oriented
        monkeypatch.setattr(eigencam, "oriented", lambda p, sign="peak": -original(p, sign))
        flipped = pearson(scaled(ours(name, model, layer, x, targets), x.shape[-2:]), expected)
        r = [max(a, b) for a, b in zip(r, flipped)]
    assert min(r) >= 0.999, (name, r)


@pytest.mark.parametrize("name", [n for n in PGC if n != "fullgrad"])
def test_parity_with_pytorch_grad_cam_on_a_trained_resnet(name, resnet, monkeypatch):
    assert_parity(name, resnet, monkeypatch)


def test_fullgrad_parity_and_the_papers_rescale(resnet, vit):
    for setup in (resnet, vit):
        model, layer, x, targets, _ = setup
        expected = theirs("fullgrad", model, layer, x, targets, None)
        same = pearson(scaled(ours("fullgrad", model, layer, x, targets, variant="pytorch-grad-cam"), x.shape[-2:]), expected)
        assert min(same) >= 0.999, same
        # the authors' rescale (per image over all channels) is another map (measured r in
        # docs/methods/top-down.md; the formula is checked by test_fullgrad_papers_formula_by_hand)
        paper = pearson(scaled(ours("fullgrad", model, layer, x, targets), x.shape[-2:]), expected)
        assert min(paper) < 0.999, paper


@pytest.mark.parametrize("name", [n for n in PGC if n not in ("fullgrad", "shapleycam")])
def test_parity_with_pytorch_grad_cam_on_a_vit(name, vit, monkeypatch):
    assert_parity(name, vit, monkeypatch)


def test_shapleycam_has_a_hessian_term_and_matches_pytorch_grad_cam():
    """A smooth (GELU) head after the layer: H·A ≠ 0, so ShapleyCAM is not GradCAM."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.Conv2d(6, 5, 3, padding=1), nn.GELU(),
                        nn.Conv2d(5, 4, 3, padding=1), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    x, targets = torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 1])
    setup = (net, net[1], x, targets, None)
    assert_parity("shapleycam", setup, None)
    assert not torch.allclose(ours("shapleycam", net, net[1], x, targets), ours("gradcam", net, net[1], x, targets))


def test_shapleycam_on_a_vit_against_a_double_backward_oracle(vit):
    """pytorch-grad-cam 1.5.7's ShapleyCAM cannot run on a ViT (its reshape is not applied to the
    activations it weights; CPU's fused attention has no second derivative): a plain-torch oracle."""
    model, layer, x, targets, reshape = vit
    store = {}

    def hook(module, args, out):  # the patch tokens become a leaf A
        a = reshape(out).detach().requires_grad_()
        store["a"] = a
        return torch.cat([out[:, :1], a.flatten(2).transpose(1, 2)], dim=1)

    for block in model.blocks:
        block.attn.fused_attn = False
    handle = layer.register_forward_hook(hook)
    try:
        y = model(x)[torch.arange(len(x)), targets].sum()
        a = store["a"]
        g, = torch.autograd.grad(y, a, create_graph=True)
        hvp, = torch.autograd.grad(g, a, grad_outputs=a.detach())
    finally:
        handle.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
    assert hvp.abs().amax() > 0
    expected = (((g - 0.5 * hvp).mean(dim=(2, 3))[:, :, None, None]) * a).sum(1).clamp_min(0).detach()
    torch.testing.assert_close(ours("shapleycam", model, layer, x, targets), expected, rtol=1e-4, atol=1e-6)
    assert all(block.attn.fused_attn for block in model.blocks)  # restored


# ---- formulas by hand and on the oracle net of test_topdown ---------------------------------------
def test_elementwise_formulas_and_fem_against_oracle():
    net = small_net()
    torch.manual_seed(1)
    x, targets = torch.randn(3, 3, 8, 8), torch.tensor([0, 3, 1])
    g, a = oracle_g_a(net, "act", x, targets)
    torch.testing.assert_close(ours("hirescam", net, "act", x, targets), (g * a).sum(1).clamp_min(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours("gradcamelementwise", net, "act", x, targets), (g * a).clamp_min(0).sum(1),
                               rtol=1e-4, atol=1e-6)
    flat = a.flatten(2)
    w = (flat > flat.mean(2, keepdim=True) + 1.5 * flat.std(2, unbiased=False, keepdim=True)).float().mean(2)
    torch.testing.assert_close(ours("fem", net, "act", x, targets, k=1.5), (w[:, :, None, None] * a).sum(1).clamp_min(0))


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "linear", "cosine"])
def test_kpca_projection_is_scikit_learns(kernel):
    from sklearn.decomposition import KernelPCA

    torch.manual_seed(0)
    feats = torch.randn(2, 6, 4, 5, dtype=torch.float64).relu()
    got = eigencam.first_kernel_component(feats, kernel, None, 3, 1.0)
    centred = eigencam.centred_positions(feats)
    for i in range(2):
        ref = KernelPCA(n_components=1, kernel=kernel).fit_transform(centred[i].numpy())[:, 0]
        np.testing.assert_allclose(got[i].flatten().numpy(), ref, rtol=1e-6, atol=1e-8)


def test_kpca_top_eigenpair_by_arpack_above_200_positions():
    """Issue 27: above 200 positions (scikit-learn's switch to ARPACK) only the top eigenpair is
    computed; the projection still equals scikit-learn's and the full eigh's."""
    from sklearn.decomposition import KernelPCA

    torch.manual_seed(0)
    feats = torch.randn(2, 8, 15, 16, dtype=torch.float64).relu()  # 240 positions
    got = eigencam.first_kernel_component(feats, "sigmoid", None, 3, 1.0)
    centred = eigencam.centred_positions(feats)
    for i in range(2):
        ref = KernelPCA(n_components=1, kernel="sigmoid").fit_transform(centred[i].numpy())[:, 0]
        np.testing.assert_allclose(got[i].flatten().numpy(), ref, rtol=1e-6, atol=1e-9)
    k = torch.randn(3, 240, 240, dtype=torch.float64)
    k = k + k.transpose(1, 2)
    value, vector = eigencam.top_eigenpair(k)
    values, vectors = torch.linalg.eigh(k)
    torch.testing.assert_close(value, values[:, -1])
    torch.testing.assert_close(vector * (vector * vectors[:, :, -1]).sum(1, keepdim=True).sign(), vectors[:, :, -1])


def test_eigen_sign_makes_the_extreme_value_positive():
    """Whatever sign LAPACK returns, the largest-magnitude value of the projection is positive."""
    a = torch.full((2, 4, 3, 3), 0.1)
    a[:, :, 0, 0] = 5.0
    a[1, 3] = torch.rand(3, 3)
    for sign in (1.0, -1.0):  # the extreme position is the bright one, or the only dark one
        m = eigencam.first_component(sign * a)
        assert (m[:, 0, 0] == m.flatten(1).abs().amax(1)).all()
    got = ours("eigencam", small_net(), "act", torch.randn(2, 3, 8, 8), 0)
    assert got.shape == (2, 8, 8) and got.amax() > 0


def test_eigen_sign_is_a_parameter_named_in_the_report():
    """Issue 27: ``sign: lapack`` keeps the solver's sign (pytorch-grad-cam's Eigen-CAM convention),
    ``peak`` (default, left out of run ids) flips it to svd_flip's; Table 1's caption says so."""
    from wsolctl.engine.plan import numbers
    from wsolctl.results.survey import table1

    a = torch.randn(3, 4, 5, 5)
    u, s, _ = torch.linalg.svd(eigencam.centred_positions(a), full_matrices=False)
    raw = eigencam.first_component(a, "lapack")
    assert torch.allclose(raw, (u[:, :, 0] * s[:, :1]).view(3, 5, 5))
    peak = eigencam.first_component(a)
    assert all(torch.allclose(p, r) or torch.allclose(p, -r) for p, r in zip(peak, raw))
    params = plugins.load("methods", "eigencam").Params
    assert "sign" not in numbers(params()) and numbers(params(sign="lapack"))["sign"] == "lapack"
    assert plugins.load("methods", "kpcacam").Params(sign="lapack").sign == "lapack"

    class Stats:
        def get(self, *args):
            return (50.0, None, 1)

    caption = table1(Stats(), ["resnet18-wsol"], ["eigencam", "eigengradcam"], "d", beyond=True).caption
    assert caption.count("`sign`") == 1 and "`peak`" in caption and "`sign: lapack`" in caption
    assert "sign" not in table1(Stats(), ["resnet18-wsol"], ["cam"], "d").caption


def test_finercam_with_two_classes_is_gradcam_of_the_logit_difference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 2)).eval()
    x, targets = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 1, 0])

    class Difference(nn.Module):  # y_c − y_other in column c
        def forward(self, logits):
            return logits - logits.flip(1)

    diff = nn.Sequential(net, Difference()).eval()
    expected = ours("gradcam", diff, "0.1", x, targets)
    torch.testing.assert_close(ours("finercam", net, "1", x, targets), expected, rtol=1e-4, atol=1e-6)
    half = ours("finercam", net, "1", x, targets, alpha=0.0)  # α = 0: GradCAM of y_c (p/Σp = 1)
    torch.testing.assert_close(half, ours("gradcam", net, "1", x, targets), rtol=1e-4, atol=1e-6)


def test_fullgrad_papers_formula_by_hand():
    """The authors' code: |x·∂y/∂x| and |b·∂y/∂z| per bias layer, each min-maxed over the whole
    image, summed over channels, upsampled with align_corners=True."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(5, 3))
    bn = net[1]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.bias.data.uniform_(-1, 1)
    net.eval()
    x, targets = torch.randn(2, 3, 8, 8, requires_grad=True), torch.tensor([1, 2])
    outs = {}
    hooks = [net[i].register_forward_hook(lambda m, a, o, i=i: outs.setdefault(i, o)) for i in (0, 1, 4)]
    y = net(x)[torch.arange(2), targets].sum()
    gx, g0, g1, g4 = torch.autograd.grad(y, [x, outs[0], outs[1], outs[4]])
    for h in hooks:
        h.remove()
    b1 = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)

    def post(t):
        flat = t.abs().flatten(1)
        flat = (flat - flat.min(1, keepdim=True)[0]) / (flat.max(1, keepdim=True)[0] - flat.min(1, keepdim=True)[0])
        return flat.view_as(t).sum(1)

    def bias(b):
        return b[None, :, None, None]

    low = post(g4 * bias(net[4].bias))[:, None]
    expected = (post(gx * x) + post(g0 * bias(net[0].bias)) + post(g1 * bias(b1))
                + F.interpolate(low, size=(8, 8), mode="bilinear", align_corners=True)[:, 0])
    torch.testing.assert_close(cams(net, x.detach(), targets, method="fullgrad"), expected.detach(), rtol=1e-4, atol=1e-5)


# ---- attention rollout ---------------------------------------------------------------------------
def rollout_oracle(model, x, head_fusion="mean"):
    """Attention recomputed from each block's attention input; the rollout one image at a time."""
    inputs = []
    handles = [b.attn.register_forward_hook(lambda m, a, o: inputs.append((m, a[0]))) for b in model.blocks]
    with torch.no_grad():
        model(x)
        for h in handles:
            h.remove()
        maps = []
        for i in range(len(x)):
            r = torch.eye(inputs[0][1].shape[1])
            for attn, tokens in inputs:
                qkv = attn.qkv(tokens[i:i + 1]).reshape(1, -1, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
                probs = ((qkv[0] * attn.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)[0]
                fused = probs.mean(0) if head_fusion == "mean" else probs.max(0).values
                fused = fused + torch.eye(len(fused))
                r = (fused / fused.sum(-1, keepdim=True)) @ r
            maps.append(r)
    return torch.stack(maps)


def test_rollout_with_a_class_token(vit):
    model, _, x, targets, _ = vit
    got = cams(model, x, targets, method="rollout")
    expected = rollout_oracle(model, x)[:, 0, 1:].reshape(len(x), *model.patch_embed.grid_size)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert all(b.attn.fused_attn for b in model.blocks)  # the model is left as it was
    maxed = cams(model, x, targets, method="rollout", head_fusion="max")
    torch.testing.assert_close(maxed, rollout_oracle(model, x, "max")[:, 0, 1:].reshape_as(maxed), rtol=1e-4, atol=1e-6)
    dropped = cams(model, x, targets, method="rollout", discard_ratio=0.5)
    assert dropped.shape == got.shape and torch.isfinite(dropped).all() and not torch.allclose(dropped, got)


def test_rollout_without_a_class_token_uses_the_patch_rows():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=64, class_token=False,
                              global_pool="avg").eval()
    x = torch.randn(2, 3, 64, 64)
    got = cams(model, x, 0, method="rollout")
    expected = rollout_oracle(model, x).mean(1).reshape(2, *model.patch_embed.grid_size)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="token model"):
        cams(small_net(), x[:, :, :8, :8], 0, method="rollout", layer="act")


# ---- batching and the engine's models ------------------------------------------------------------
NEW = ["hirescam", "gradcamelementwise", "eigencam", "eigengradcam", "kpcacam", "fem", "shapleycam", "fullgrad",
       "finercam"]


@pytest.mark.parametrize("name", NEW + ["rollout"])
def test_batched_equals_one_image_at_a_time(name, vit):
    model, layer, x, targets, _ = vit
    batched = ours(name, model, layer, x, targets)
    single = torch.cat([ours(name, model, layer, x[i:i + 1], targets[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_on_the_engines_vit_model():
    """The engine's WSOLModel on a DeiT (a FeatureMap backbone, an Output with logits); the contract
    test runs every method on the engine's CNN model."""
    from tests.conftest import backbone_info, build_model
    from wsolctl.methods.cam import CAM
    from wsolctl.methods.rollout import AttentionRollout

    model = build_model(CAM(), "deit-tiny").eval()
    x = torch.randn(2, 3, 32, 32)
    for name in NEW + ["rollout"]:
        got = ours(name, model, None, x, torch.tensor([0, 1]))
        assert got.dim() == 3 and len(got) == 2 and torch.isfinite(got).all(), name
    assert AttentionRollout.unsupported(backbone_info("resnet18-wsol"))
    assert AttentionRollout.unsupported(backbone_info("deit-tiny")) is None
