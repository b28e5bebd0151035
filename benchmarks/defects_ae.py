"""Defect localisation on generated texture patches with an SSIM autoencoder (Bergmann 2019).

The recipe of Bergmann et al., "Improving unsupervised defect segmentation by applying
structural similarity to autoencoders" (VISAPP 2019), on the benchmark of
``benchmarks/defects.py`` (64x64 RGB patches of ``brick``, ``grass``, ``gravel``; 1,000 normal
training patches, 500 normal and 200 defective test patches; scratch, blot, missing piece,
colour shift):

- a fully convolutional autoencoder (:func:`reconad.models.build_model`, ``kind=conv``, no
  dense bottleneck: the code is a 4x4 feature map per 32x32 crop) trained on random crops of
  the normal patches (flipped at random) with the SSIM loss
  (:func:`reconad.losses.per_image_loss`), Adam with a cosine schedule. Unlike Bergmann's
  plain AE it is a *denoising* AE: each training input gets one square of reconad's
  ``patch`` corruption (:func:`reconad.transforms.corrupt`; the target stays clean), so the
  network learns to paint texture over whatever does not belong — a plain SSIM AE of the
  same size scored about 0.79 image AUROC on the validation split, the denoising one 0.9+;
- anomaly map: the SSIM residual ``1 - local SSIM`` plus the absolute residual (a colour shift
  keeps the structure that SSIM sees), each computed per crop and tiled over the patch
  (:func:`reconad.models.sliding_window`), Gaussian-smoothed (:func:`reconad.score
  .gaussian_smooth`) and standardised per pixel position on normal validation maps
  (:class:`reconad.score.MapNormalizer`), then averaged;
- image score: the mean of the top k % of the map (:func:`reconad.score.reduce_map`).

The settings of :data:`RECIPE` were chosen on a validation split carved out of the *training*
region of the textures (``--validate``): 15 % of the normal training patches, plus as many
defective copies of them drawn with :func:`reconad.data.add_defect` (the
test patches were never used to choose anything). Every run reports the test metrics
(:mod:`reconad.evaluation`: pixel AUROC, AU-PRO to FPR 0.3) per texture and seed.

    python benchmarks/defects_ae.py [--quick] [--seeds N] [--textures brick ...] [--out DIR]
    python benchmarks/defects_ae.py --validate --set map=ssim --set epochs=20   # explore

Writes ``DIR/defects-ae.json`` (default ``benchmarks/results``).

Measured (``results/defects-ae.json``: full sizes, seeds 0-2, test split; the three textures
run as three parallel ``--threads 1`` processes merged with ``--merge``, on 2 cores shared
with other jobs, load ~10): image AUROC / pixel AUROC / PRO = brick 0.945 / 0.983 / 0.956,
grass 0.856 / 0.840 / 0.772, gravel 0.867 / 0.846 / 0.782, mean 0.889 / 0.890 / 0.837
(kNN-on-pixels baseline 0.69 / 0.82 / 0.68). Scratches and blots are found (AUROC 0.92-1.0);
``missing`` (0.75-0.78) and, on grass and gravel, ``color`` (0.74-0.82) are not: a blurry
texture reconstruction looks like a flat mean-colour square, and a fully convolutional AE
reproduces a local brightness change. About 2.5 min training + 4 min scoring per texture and
seed under that load (scoring then ran the model once per map kind; it now runs it once).

Follow-up on the same validation split (full sizes, seed 0, two defective copies of each of
the 75 held-out normals, the model scored whole, not by tiles): a PatchCore-like map of this
AE's own encoder features (nearest-neighbour distance of each location's stage-1+2 features
to 16,384 of the training patches', upsampled) adds at most 0.02 image AUROC to SSIM +
squared and costs ~20 s per texture; the code (stage 3) is worse than nothing. What the
reconstruction misses is found by a model-free map, the squared Mahalanobis distance of each
pixel's local colour mean and *log* standard deviation at scales 1, 2 and 4 px against the
normal training pixels (:mod:`reconad.score`): averaged with SSIM + squared it gives
image / pixel AUROC / PRO brick 0.981 / 0.977 / 0.935, grass 0.975 / 0.941 / 0.864, gravel
0.959 / 0.950 / 0.873 (SSIM + squared alone: 0.968 / 0.986 / 0.959, 0.823 / 0.847 / 0.773,
0.849 / 0.843 / 0.758): colour shifts go to AUROC 1.0 and missing pieces to 0.84-0.93. That is
the ``defects-ssim`` preset's ``score.map=ssim+squared+color``, measured by
``benchmarks/run.py defects``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from reconad.config import ModelConfig
from reconad.data import (
    DEFECT_KINDS,
    TEXTURES,
    TRAIN_ROWS,
    DefectDataset,
    add_defect,
    make_defect_dataset,
    random_patches,
    read_defect_dataset,
    texture_image,
)
from reconad.evaluation import pixel_auroc, pro_score
from reconad.files import write_json_atomic
from reconad.losses import per_image_loss
from reconad.models import build_model, count_parameters, sliding_window
from reconad.score import MapNormalizer, anomaly_map, gaussian_smooth, reduce_map
from reconad.transforms import corrupt, random_crops

FULL = {"n_train": 1000, "n_test_good": 500, "n_test_defect": 200}
QUICK = {"n_train": 600, "n_test_good": 150, "n_test_defect": 60}
VAL_FRACTION = 0.15  # normal training patches held out for the map statistics (and --validate)

RECIPE: dict = {
    # model (reconad ModelConfig fields)
    "channels": [32, 64],
    "kernel": 3,
    "bottleneck": False,  # fully convolutional: the code is the last feature map
    "code_channels": 32,  # channels of the last encoder stage: the spatial code (4x4 per crop)
    # training
    "crop": 32,
    "loss": "ssim",
    "ssim_weight": 0.5,
    "lr": 2e-3,
    "batch": 64,
    "epochs": 20,
    "flip": True,
    "denoise_patch": 0.25,  # > 0: reconad's "patch" corruption of the input at this level
    # scoring
    "map": "ssim+sq",
    "stride": 8,
    "smooth_sigma": 2.0,
    "standardize": True,
    "reduction": "topk",
    "topk": 0.01,
}
# Which data chose each setting ("validation": the held-out training-region split of
# --validate, 1 seed, --quick sizes; "default": not tuned).
CHOSEN_ON = {
    "channels, kernel, code_channels, crop": "validation (gravel: kernel 5, code 8/16/64, crop "
                                             "64 no better within noise)",
    "denoise_patch": "validation (all 3 textures: 0 -> 0.79, 0.25 -> 0.90 image AUROC; 0.4 "
                     "no better on gravel)",
    "epochs": "validation (grass: 40 no better than 20)",
    "loss, lr, batch, flip": "default (Bergmann's SSIM loss; not tuned)",
    "map, smooth_sigma, standardize, reduction, topk": "validation (all 3 textures, grid of "
                                                       "5 maps x sigma 0/2/4 x std x 3 "
                                                       "reductions)",
    "stride": "validation (gravel: 8 slightly above 16)",
}


def model_config(recipe: dict) -> ModelConfig:
    """The ``model`` config section of the recipe."""
    return ModelConfig(kind="conv", channels=[*recipe["channels"], recipe["code_channels"]],
                       kernel=recipe["kernel"], bottleneck=recipe["bottleneck"],
                       latent=recipe.get("latent", 32), downsample="stride",
                       upsample="transpose", activation="leaky_relu")


def train_autoencoder(images: torch.Tensor, recipe: dict, seed: int) -> torch.nn.Module:
    """Train the recipe's autoencoder on random crops of normal images ``(N, C, H, W)``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    crop = recipe["crop"]
    model = build_model(model_config(recipe), (images.shape[1], crop, crop))
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    steps_per_epoch = max(1, len(images) // recipe["batch"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe["epochs"] * steps_per_epoch)
    model.train()
    for _ in range(recipe["epochs"]):
        order = torch.randperm(len(images), generator=g)
        for step in range(steps_per_epoch):
            batch = images[order[step * recipe["batch"]:(step + 1) * recipe["batch"]]]
            x = random_crops(batch, crop, g) if crop < images.shape[-1] else batch
            if recipe["flip"]:
                flip_w = torch.rand(len(x), generator=g) < 0.5
                flip_h = torch.rand(len(x), generator=g) < 0.5
                x = torch.where(flip_w[:, None, None, None], x.flip(-1), x)
                x = torch.where(flip_h[:, None, None, None], x.flip(-2), x)
            x_in = corrupt(x, "patch", recipe["denoise_patch"], g) if recipe["denoise_patch"] else x
            loss = per_image_loss(recipe["loss"], model(x_in), x,
                                  ssim_weight=recipe["ssim_weight"]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


MAP_COMPONENTS = {"ssim": ["ssim"], "abs": ["absolute"], "sq": ["squared"],
                  "ssim+abs": ["ssim", "absolute"], "ssim+sq": ["ssim", "squared"]}


def unsmoothed_maps(model: torch.nn.Module, images: torch.Tensor, crop: int, stride: int,
                    kinds: list[str]) -> dict[str, torch.Tensor]:
    """Component maps ``{kind: (N, H, W)}``, computed per crop (one reconstruction each) and
    averaged over the overlapping crops that cover each pixel."""
    window = min(11, crop - (1 - crop % 2))

    def tile_maps(tiles: torch.Tensor) -> torch.Tensor:
        x_hat = model(tiles)
        return torch.stack([anomaly_map(tiles, x_hat, kind, ssim_window=window)
                            for kind in kinds], dim=1)  # (n, K, p, p)

    with torch.no_grad():
        if crop < images.shape[-1]:
            maps = sliding_window(tile_maps, images, crop, stride, batch_size=256)
        else:
            maps = torch.cat([tile_maps(images[i:i + 256]) for i in range(0, len(images), 256)])
    return {kind: maps[:, k] for k, kind in enumerate(kinds)}  # each (N, H, W)


def raw_maps(model: torch.nn.Module, images: torch.Tensor, recipe: dict) -> dict[str, torch.Tensor]:
    """The smoothed component maps ``{kind: (N, H, W)}`` of the recipe's map."""
    maps = unsmoothed_maps(model, images, recipe["crop"], recipe["stride"],
                           MAP_COMPONENTS[recipe["map"]])
    return {k: gaussian_smooth(m, recipe["smooth_sigma"]) for k, m in maps.items()}


class MapScorer:
    """Fits the per-position (or global) standardisation of each component on normal maps."""

    def __init__(self, recipe: dict) -> None:
        self.recipe = recipe

    def fit(self, normal: dict[str, torch.Tensor]) -> MapScorer:
        self.norms = {}
        for kind, maps in normal.items():
            if self.recipe["standardize"]:
                self.norms[kind] = MapNormalizer().fit(maps)
            else:  # one scale per component so that they can be summed
                self.norms[kind] = (float(maps.mean()), float(maps.std()))
        return self

    def final_map(self, comps: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for kind, maps in comps.items():
            norm = self.norms[kind]
            if isinstance(norm, MapNormalizer):
                parts.append(norm.transform(maps))
            else:
                parts.append((maps - norm[0]) / max(norm[1], 1e-12))
        return torch.stack(parts).mean(dim=0)

    def scores(self, maps: torch.Tensor) -> torch.Tensor:
        return reduce_map(maps, self.recipe["reduction"], self.recipe["topk"])


def per_kind_auroc(scores: np.ndarray, data: DefectDataset) -> dict[str, float]:
    """Image AUROC of each defect kind against all the normal images."""
    good = data.kinds == "good"
    return {f"auroc_{kind}": float(roc_auc_score(data.labels[good | (data.kinds == kind)],
                                                 scores[good | (data.kinds == kind)]))
            for kind in sorted(set(data.kinds) - {"good"})}


def evaluate(maps: torch.Tensor, scores: torch.Tensor, data: DefectDataset) -> dict:
    """Image AUROC, pixel AUROC, PRO and the image AUROC of each defect kind."""
    m, s = maps.numpy(), scores.numpy()
    row = {"image_auroc": float(roc_auc_score(data.labels, s)),
           "pixel_auroc": pixel_auroc(m, data.masks), "pro": pro_score(m, data.masks)}
    return {**row, **per_kind_auroc(s, data)}


def validation_defects(normal: np.ndarray, texture: str, seed: int) -> DefectDataset:
    """Normal validation patches plus a defective copy of each, drawn from the TRAIN region."""
    rng = np.random.default_rng([seed, 7])
    other_name = next(t for t in TEXTURES if t != texture)
    other_tex = texture_image(other_name)
    split = round(TRAIN_ROWS * other_tex.shape[1])
    others = random_patches(other_tex, len(normal), normal.shape[-1], (0, split), rng)
    bad, masks, kinds = [], [], []
    for i, (patch, other) in enumerate(zip(normal, others, strict=True)):
        kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
        image, mask = add_defect(patch, kind, rng, other)
        bad.append(image)
        masks.append(mask)
        kinds.append(kind)
    n = len(normal)
    return DefectDataset(
        images=np.concatenate([normal, np.stack(bad)]),
        masks=np.concatenate([np.zeros((n, *normal.shape[-2:]), bool), np.stack(masks)]),
        kinds=np.array(["good"] * n + kinds), ids=np.array([str(i) for i in range(2 * n)]),
        train=np.zeros(2 * n, bool))


def run_texture(root: Path, texture: str, recipe: dict, seed: int, validate: bool) -> dict:
    """Train on one texture's normal patches and evaluate (test, or the validation split)."""
    started = time.perf_counter()
    data = read_defect_dataset(root)
    train = data.subset(data.train)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train.images))
    n_val = max(2, round(VAL_FRACTION * len(order)))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fit_images = torch.from_numpy(train.images[fit_idx].astype(np.float32) / 255)
    model = train_autoencoder(fit_images, recipe, seed)
    trained = time.perf_counter()
    if validate:
        # Half the held-out normals fit the map statistics; the other half (and defective
        # copies of them) are the validation set.
        half = n_val // 2
        stats_images = train.images[val_idx[:half]]
        target = validation_defects(train.images[val_idx[half:]], texture, seed)
    else:
        stats_images = train.images[val_idx]
        target = data.subset(~data.train)
    if validate:
        return scoring_grid(model, stats_images, target, recipe, texture, seed,
                            trained - started)
    scorer = MapScorer(recipe).fit(raw_maps(model, torch.from_numpy(
        stats_images.astype(np.float32) / 255), recipe))
    maps = scorer.final_map(raw_maps(model, torch.from_numpy(target.float_images()), recipe))
    return [{"texture": texture, "seed": seed, "split": "test",
             **evaluate(maps, scorer.scores(maps), target),
             "train_seconds": round(trained - started, 1),
             "total_seconds": round(time.perf_counter() - started, 1),
             "parameters": count_parameters(model)}]


def scoring_grid(model, stats_images, target, recipe, texture, seed, train_seconds) -> list:
    """Every scoring variant (map, sigma, standardisation, reduction) of one trained model."""
    kinds = ["ssim", "absolute", "squared"]
    to_t = lambda a: torch.from_numpy(a.astype(np.float32) / 255)  # noqa: E731
    stats = unsmoothed_maps(model, to_t(stats_images), recipe["crop"], recipe["stride"], kinds)
    maps = unsmoothed_maps(model, to_t(target.images), recipe["crop"], recipe["stride"], kinds)
    rows = []
    for sigma in (0.0, 2.0, 4.0):
        s_stats = {k: gaussian_smooth(m, sigma) for k, m in stats.items()}
        s_maps = {k: gaussian_smooth(m, sigma) for k, m in maps.items()}
        for name, comps in MAP_COMPONENTS.items():
            for standardize in (False, True):
                v = {**recipe, "map": name, "smooth_sigma": sigma, "standardize": standardize}
                scorer = MapScorer(v).fit({k: s_stats[k] for k in comps})
                final = scorer.final_map({k: s_maps[k] for k in comps})
                m, masks = final.numpy(), target.masks
                pix = {"pixel_auroc": pixel_auroc(m, masks), "pro": pro_score(m, masks)}
                for reduction, topk in (("max", 0.01), ("topk", 0.01), ("topk", 0.03)):
                    s = reduce_map(final, reduction, topk).numpy()
                    rows.append({"texture": texture, "seed": seed, "split": "validation",
                                 "variant": f"{name} s{sigma:g} std{int(standardize)} "
                                            f"{reduction}{topk if reduction == 'topk' else ''}",
                                 "image_auroc": float(roc_auc_score(target.labels, s)), **pix,
                                 "train_seconds": round(train_seconds, 1),
                                 **per_kind_auroc(s, target)})
    return rows


def summarize(rows: list[dict], recipe: dict, counts: dict) -> dict:
    """The JSON report: the recipe, the mean over textures (of the per-texture seed means),
    per texture and per seed."""
    textures = list(dict.fromkeys(r["texture"] for r in rows))
    keys = ("image_auroc", "pixel_auroc", "pro")
    per_texture = {t: {key: float(np.mean([r[key] for r in rows if r["texture"] == t]))
                       for key in (*keys, "train_seconds", "total_seconds")}
                   for t in textures}
    for t in textures:
        per_texture[t]["seeds"] = sorted(r["seed"] for r in rows if r["texture"] == t)
    return {"recipe": recipe, "chosen_on": CHOSEN_ON, "split": rows[0]["split"],
            "dataset": {**counts, "size": 64, "seed": 0, "textures": textures},
            "mean": {key: float(np.mean([per_texture[t][key] for t in textures]))
                     for key in keys},
            "per_texture": per_texture, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller datasets")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1")
    parser.add_argument("--textures", nargs="+", default=list(TEXTURES), choices=list(TEXTURES))
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--validate", action="store_true",
                        help="evaluate on the validation split from the training region")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a RECIPE entry, e.g. --set crop=64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="combine the rows of earlier runs (e.g. one per texture or seed, "
                             "run in parallel) into DIR/defects-ae.json; trains nothing")
    args = parser.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        report = summarize([r for part in parts for r in part["rows"]], parts[0]["recipe"],
                           {k: parts[0]["dataset"][k] for k in FULL})
        out = args.out or Path(__file__).resolve().parent / "results"
        write_json_atomic(out / "defects-ae.json", report)
        print(json.dumps({"mean": report["mean"]}), f"wrote {out / 'defects-ae.json'}")
        return 0
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPE)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in recipe and key != "latent":
            parser.error(f"unknown recipe key {key!r}")
        recipe[key] = json.loads(value) if value[:1] in "[{0123456789-.tf" else value
    counts = QUICK if args.quick else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="reconad-defects-ae-") as tmp:
        for texture in args.textures:
            root = make_defect_dataset(Path(tmp) / texture, texture, size=64, seed=0, **counts)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for row in run_texture(root, texture, recipe, seed, args.validate):
                    rows.append(row)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                      for k, v in row.items()}), flush=True)
    if args.validate:  # one line per scoring variant, mean over textures and seeds
        table = {}
        for r in rows:
            table.setdefault(r["variant"], []).append(
                (r["image_auroc"], r["pixel_auroc"], r["pro"]))
        for name, vals in sorted(table.items(), key=lambda kv: -np.mean(kv[1])):
            print(f"{name:32s}", " ".join(f"{v:.3f}" for v in np.mean(vals, axis=0)))
        return 0
    report = summarize(rows, recipe, counts)
    summary = report["mean"]
    print(json.dumps({"mean": summary}))
    if args.out or not (args.quick or args.validate):
        out = args.out or Path(__file__).resolve().parent / "results"
        write_json_atomic(out / "defects-ae.json", report)
        print(f"wrote {out / 'defects-ae.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
