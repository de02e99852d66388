"""Per-letter heat maps: where a class-map model (`head: avg|max|lse|csra`, e.g. `dm_fcn`) found each letter.

The head's 1x1 conv gives one map per letter before the spatial pool (models.ClassMapHead); a
map's sigmoid is "letter here" per cell at stride 8 of the net input. Models with `head: timm`
pool inside the backbone and have no such maps: they get None; the report then uses Grad-CAM
(`grad_cam`, pytorch-grad-cam) and the serve page says that there is no heat map.
Used by the `serve` page, the report's gallery and the quickstart notebook.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

HEAT_RGB = (255, 40, 0)  # the overlay colour: red-orange reads well on grey noise


def has_class_maps(model) -> bool:
    return getattr(model, "head", None) is not None


@torch.no_grad()
def class_maps(model, cfg, images: np.ndarray, device: torch.device | str = "cpu",
               batch_size: int = 32) -> np.ndarray | None:
    """(N, K, h, w) float32 sigmoid of the class maps of uint8 images (N, 256, 256); None
    when the model has no class-map head. No TTA: the maps of the image as it is."""
    from dirtymnist.model.precision import autocast_context
    from dirtymnist.model.transforms import to_input

    if not has_class_maps(model):
        return None
    device = torch.device(device)
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_input(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])),
                     cfg, device, None, "none")
        with autocast_context(cfg, device, training=False):
            _, maps = model(x, return_maps=True)  # (B, K, h, w) logits per cell
        out.append(torch.sigmoid(maps.float()).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def mean_maps(models: Sequence[tuple], images: np.ndarray, device="cpu") -> np.ndarray | None:
    """Mean over (model, cfg) pairs (a run's folds) of `class_maps`; None if any has no maps."""
    acc = None
    for model, cfg in models:
        maps = class_maps(model, cfg, images, device)
        if maps is None:
            return None
        if acc is not None and maps.shape != acc.shape:
            return None  # folds of other input sizes: no common grid to average on
        acc = maps if acc is None else acc + maps
    return None if acc is None else acc / len(models)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.9) -> np.ndarray:
    """(H, W) uint8 grey image + (h, w) heat in [0, 1] -> (H, W, 3) uint8 RGB, heat in HEAT_RGB."""
    import cv2

    h, w = image.shape
    a = cv2.resize(np.asarray(heat, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    # (H, W, 1) opacity of the colour: p^2 (as the serve page), so the faint background fades
    a = np.clip(a, 0.0, 1.0)[..., None] ** 2 * alpha
    grey = np.repeat(image[..., None].astype(np.float32) * 0.75, 3, axis=2)  # dimmed: colour shows
    rgb = grey * (1 - a) + np.asarray(HEAT_RGB, np.float32) * a
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def grad_cam(model, cfg, image: np.ndarray, classes: Sequence[int],
             device: torch.device | str = "cpu") -> np.ndarray:
    """(len(classes), S, S) float32 Grad-CAM maps (pytorch-grad-cam) of one uint8 image (256, 256)
    for a model without class maps: gradients of each class's logit at the backbone's last
    feature stage (timm's `feature_info`). Each map is scaled to [0, 1] on its own: where, not
    how sure. Raises ImportError without the `grad-cam` package."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from dirtymnist.model.transforms import to_input

    if not len(classes):
        return np.zeros((0, cfg.image_size, cfg.image_size), np.float32)
    layer = model.trunk.get_submodule(model.trunk.feature_info[-1]["module"])
    x = to_input(torch.from_numpy(np.ascontiguousarray(image))[None], cfg, torch.device(device), None, "none")
    x = x.expand(len(classes), -1, -1, -1).contiguous()  # one copy per class: one target each
    model.eval()
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(j)) for j in classes])
    return np.asarray(maps, np.float32)  # (len(classes), S, S)
