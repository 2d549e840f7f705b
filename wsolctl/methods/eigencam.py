"""Top-down methods without class weights (not in the survey; pytorch-grad-cam's). A = activations
of the target layer (N, C, h, w); X = the (h·w, C) matrix of an image's features, centred over the
positions (each channel's spatial mean removed). Every map = ReLU(·) of the expression below.

- Eigen-CAM (Muhammad and Yeasin, 2020): the projection X·v₁ of the positions on the first principal
  component v₁ of X (features A). Class-agnostic: the target is ignored.
- Eigen-Grad-CAM (pytorch-grad-cam): the same with the features g⊙A (g = ∂y_c/∂A: class-specific).
- KPCA-CAM (Karmani et al., 2024): the first kernel principal component of X, as scikit-learn's
  ``KernelPCA(n_components=1, kernel, gamma)`` computes it: K = kernel(X, X) (h·w × h·w), double
  centred, top eigenpair (λ, u), projection √λ·u. Class-agnostic. The top eigenpair only, like
  scikit-learn's ``eigen_solver="auto"``: a full ``eigh`` up to 200 positions, ARPACK
  (``scipy.sparse.linalg.eigsh``, one pair) above on CPU, where a full ``eigh`` of every eigenpair
  took most of the time (benchmarks/README.md); ``eigh`` on other devices.
- FEM (Fuad et al., 2020): w_k = fraction of the positions where A_k > mean(A_k) + k·std(A_k)
  (population std), map = ReLU(Σ_k w_k A_k). Class-agnostic.

Sign of a principal component (parameter ``sign`` of Eigen-CAM, Eigen-Grad-CAM and KPCA-CAM, named
in the report's caption): an eigenvector's sign is arbitrary (LAPACK returns either, CPU and CUDA
may differ), and a ReLU after a flipped projection keeps the other side of the map. ``sign: peak``
(default) makes the largest-magnitude value of each projection positive: scikit-learn's
``svd_flip`` convention (so KPCA-CAM is scikit-learn's, as pytorch-grad-cam's) and Seg-Eigen-CAM's
sign correction (Chung and Ying, 2025, eq. 13). ``sign: lapack`` keeps the sign the solver
returns, as pytorch-grad-cam's Eigen-CAM and Eigen-Grad-CAM do with ``numpy.linalg.svd``
(torch's solver here, so not always the same sign as numpy's; docs/methods/top-down.md gives the
measured agreement). Aligning the component with the channel
sum instead was tried and dropped: after a LayerNorm (a ViT's ``norm1``) the channel sum is about 0
at every token, so the sign would follow rounding noise.

All of it is batched: one ``torch.linalg.svd`` / ``eigh`` call on the (N, h·w, ·) stack, on the
images' device (KPCA-CAM's ARPACK path: one call per image, on CPU).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from wsolctl._lazy import torch
from wsolctl.methods.topdown import (
    LayerParams,
    TopDownMethod,
    activations,
    gradients_and_activations,
    weighted_sum,
)
from wsolctl.recipe.base import NEW_DEFAULT


def centred_positions(x: "torch.Tensor") -> "torch.Tensor":
    """(N, C, h, w) → (N, h·w, C), each channel's mean over the positions removed."""
    flat = x.flatten(2).transpose(1, 2)
    return flat - flat.mean(dim=1, keepdim=True)


Sign = Literal["peak", "lapack"]
SIGN_NOTE = ("Eigen-CAM, Eigen-Grad-CAM, KPCA-CAM: a principal component's sign is set by their `sign` "
             "parameter, default `peak` (the projection's largest-magnitude value made positive, scikit-learn's "
             "svd_flip); pytorch-grad-cam's Eigen-CAMs keep the solver's sign (`sign: lapack`).")


class EigenParams(LayerParams):
    sign: Sign = Field("peak", json_schema_extra=NEW_DEFAULT,
                       description="peak: each projection's largest-magnitude value positive (scikit-learn's svd_flip); "
                                   "lapack: the sign the solver returns (pytorch-grad-cam's Eigen-CAM)")


def oriented(projection: "torch.Tensor", sign: Sign = "peak") -> "torch.Tensor":
    """Flip each row of (N, L) so that its largest-magnitude value is positive (svd_flip); ``lapack``:
    as it is."""
    if sign == "lapack":
        return projection
    peak = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True))
    return torch.where(peak < 0, -projection, projection)


def first_component(x: "torch.Tensor", sign: Sign = "peak") -> "torch.Tensor":
    """(N, C, h, w) → (N, h, w): projection of the centred positions on their first principal axis."""
    n, _, h, w = x.shape
    u, s, _ = torch.linalg.svd(centred_positions(x), full_matrices=False)
    return oriented(u[:, :, 0] * s[:, :1], sign).view(n, h, w)


class EigenCAM(TopDownMethod):
    Params = EigenParams
    report_note = SIGN_NOTE

    def features(self, forward_func, layers, images, targets) -> "torch.Tensor":
        return activations(forward_func, layers[0], images)

    def project(self, x: "torch.Tensor") -> "torch.Tensor":
        return first_component(x, self.params.sign)

    def compute(self, forward_func, layers, images, targets):
        return self.project(self.features(forward_func, layers, images, targets)).clamp_min(0)


class EigenGradCAM(EigenCAM):
    def features(self, forward_func, layers, images, targets):
        (g, a), = gradients_and_activations(forward_func, layers, images, targets)
        return g * a


class KPCAParams(EigenParams):
    kernel: Literal["sigmoid", "rbf", "poly", "linear", "cosine"] = Field(
        "sigmoid", description="kernel of the kernel PCA (pytorch-grad-cam: sigmoid)")
    gamma: Optional[float] = Field(None, gt=0, description="kernel coefficient; default 1 / channels (scikit-learn)")
    degree: int = Field(3, ge=1, description="degree of the poly kernel (scikit-learn: 3)")
    coef0: float = Field(1.0, description="constant term of the poly and sigmoid kernels (scikit-learn: 1)")


def kernel_matrix(x: "torch.Tensor", kind: str, gamma: float, degree: int, coef0: float) -> "torch.Tensor":
    """(N, L, C) rows → (N, L, L) kernel, scikit-learn's ``pairwise_kernels`` definitions."""
    if kind == "cosine":
        x = torch.nn.functional.normalize(x, dim=2)
    dot = x @ x.transpose(1, 2)
    if kind == "sigmoid":
        return torch.tanh(gamma * dot + coef0)
    if kind == "poly":
        return (gamma * dot + coef0) ** degree
    if kind == "rbf":
        sq = dot.diagonal(dim1=1, dim2=2)
        return torch.exp(-gamma * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp_min(0))
    return dot  # linear, cosine


def first_kernel_component(x: "torch.Tensor", kind: str, gamma: Optional[float], degree: int,
                           coef0: float, sign: Sign = "peak") -> "torch.Tensor":
    """(N, C, h, w) → (N, h, w): KernelPCA(n_components=1).fit_transform of the centred positions."""
    n, c, h, w = x.shape
    k = kernel_matrix(centred_positions(x), kind, gamma if gamma is not None else 1.0 / c, degree, coef0)
    k = k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True) + k.mean(dim=(1, 2), keepdim=True)
    value, vector = top_eigenpair(k)
    return oriented(vector * value[:, None].clamp_min(0).sqrt(), sign).view(n, h, w)


ARPACK_ABOVE = 200  # scikit-learn's KernelPCA(eigen_solver="auto"): ARPACK for more samples than this


def top_eigenpair(k: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Largest eigenvalue (N,) and its unit eigenvector (N, L) of each symmetric (N, L, L) matrix."""
    if k.device.type != "cpu" or k.shape[-1] <= ARPACK_ABOVE:
        values, vectors = torch.linalg.eigh(k)  # ascending
        return values[:, -1], vectors[:, :, -1]
    import numpy as np
    from scipy.sparse.linalg import eigsh

    start = np.random.default_rng(0).uniform(-1, 1, k.shape[-1])  # seeded, as scikit-learn's v0 (never ones:
    pairs = [eigsh(m, k=1, which="LA", v0=start) for m in k.numpy()]  # a centred kernel maps ones to 0)
    value = torch.tensor(np.array([p[0][0] for p in pairs]), dtype=k.dtype)
    return value, torch.from_numpy(np.stack([p[1][:, 0] for p in pairs])).to(k.dtype)


class KPCACAM(EigenCAM):
    Params = KPCAParams

    def project(self, x):
        p = self.params
        return first_kernel_component(x, p.kernel, p.gamma, p.degree, p.coef0, p.sign)


class FEMParams(LayerParams):
    k: float = Field(2.0, description="threshold = mean + k·std of each channel (FEM / pytorch-grad-cam: 2)")


class FEM(TopDownMethod):
    Params = FEMParams

    def compute(self, forward_func, layers, images, targets):
        a = activations(forward_func, layers[0], images)
        flat = a.flatten(2)
        threshold = flat.mean(dim=2, keepdim=True) + self.params.k * flat.std(dim=2, correction=0, keepdim=True)
        return weighted_sum((flat > threshold).to(a.dtype).mean(dim=2), a)
