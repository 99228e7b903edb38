"""Procedural street scenes seen from a moving car: the embedded default dataset.

SYNTHETIC DATA. These are rendered pictures, not photographs: a flat road with lane marks,
sidewalks, building facades with windows, fences, trees, cars and people, drawn in perspective
from a camera that moves forward a little every frame. Each street is a fixed random layout,
each frame a step along it, and every pixel's class is known exactly. They let
``python -m segvn.train`` run on a fresh offline machine and are learnable, so a short run is
a real smoke test; they say nothing about accuracy on real streets.

Frames are written once in the ``data=vietnam`` layout (RGB colour masks) and reused.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segvn.data.classes import CLASS_NAMES, PALETTE, index_to_rgb
from segvn.data.sources import StreetFolders
from segvn.utils.io import write_atomic

log = logging.getLogger(__name__)

C = {name: i for i, name in enumerate(CLASS_NAMES)}
ROAD_HALF, SIDEWALK, FACADE = 3.5, 2.5, 6.5  # metres from the road's centre line
CAM_HEIGHT, NEAR, FAR, LOOP = 1.5, 2.0, 90.0, 120.0
GENERATOR_VERSION = 1


@dataclass
class _Billboard:
    kind: str  # car | person | tree
    x: float  # lateral centre (m)
    z: float  # position along the street (m)
    width: float
    height: float
    color: np.ndarray


def _street_layout(rng: np.random.Generator) -> dict:
    """A street's fixed furniture: facades, fences, trees, parked and moving cars, people."""
    blocks = []
    for side in (-1, 1):
        z = 0.0
        while z < LOOP:
            length = rng.uniform(6, 16)
            gap = rng.uniform(0, 4) if rng.random() < 0.4 else 0.0
            colour = rng.integers(90, 200, 3)
            blocks.append((side, z, z + length, rng.uniform(6, 18), colour))
            z += length + gap
    fence_side = int(rng.choice([-1, 1]))
    fences = [(fence_side, z, z + rng.uniform(5, 15)) for z in np.arange(0, LOOP, 25.0) + rng.uniform(0, 8)]
    things: list[_Billboard] = []
    for z in np.arange(0, LOOP, rng.uniform(7, 12)):
        side = rng.choice([-1, 1])
        things.append(
            _Billboard(
                "tree",
                side * (ROAD_HALF + SIDEWALK - 0.5),
                z + rng.uniform(0, 3),
                rng.uniform(2.5, 4),
                rng.uniform(4, 7),
                np.array([40, 110, 30]) + rng.integers(-20, 20, 3),
            )
        )
    for z in np.arange(5, LOOP, rng.uniform(9, 16)):
        lane = rng.choice([-1.75, 1.75])
        things.append(_Billboard("car", lane, z, 1.8, 1.5, rng.integers(20, 235, 3)))
    for z in np.arange(3, LOOP, rng.uniform(6, 10)):
        side = rng.choice([-1, 1])
        things.append(
            _Billboard(
                "person",
                side * (ROAD_HALF + rng.uniform(0.5, 2.0)),
                z,
                0.6,
                rng.uniform(1.5, 1.9),
                rng.integers(20, 235, 3),
            )
        )
    return {
        "blocks": blocks,
        "fences": fences,
        "things": things,
        "horizon": rng.uniform(0.40, 0.50),
        "sky": np.array([120, 170, 225]) + rng.integers(-25, 25, 3),
        "road": rng.integers(70, 110),
        "sidewalk": np.array([185, 170, 165]) + rng.integers(-20, 20, 3),
        "speed": rng.uniform(0.8, 1.6),
    }


def render_frame(
    layout: dict, t: int, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render frame ``t`` of a street: an RGB uint8 image and its exact class-index map."""
    h, w = height, width
    f = 0.9 * w
    yh = layout["horizon"] * h
    cam_z = t * layout["speed"]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    lab = np.full((h, w), C["sky"], np.uint8)

    # sky: a vertical gradient
    img[:] = layout["sky"] * (0.8 + 0.2 * ys[..., None] / h)

    # ground plane: road, lane marks, sidewalks
    ground = ys > yh + 0.5
    z = np.where(ground, f * CAM_HEIGHT / np.maximum(ys - yh, 1e-3), FAR)
    x_world = (xs - w / 2) * z / f
    ax = np.abs(x_world)
    road = ground & (ax < ROAD_HALF)
    side = ground & ~road
    lab[road], lab[side] = C["road"], C["sidewalk"]
    img[road] = layout["road"]
    img[side] = layout["sidewalk"]
    mark = road & (ax < 0.12) & (((z + cam_z) % 6.0) < 3.0)
    img[mark] = 235
    kerb = ground & (np.abs(ax - ROAD_HALF) < 0.15)
    img[kerb] = 210

    # facades: vertical planes at |x| = FACADE, one column at a time (vectorised over columns)
    col = xs[0] - w / 2
    for s in (-1, 1):
        cols = np.nonzero(s * col > 1.0)[0]
        zc = f * FACADE / np.abs(col[cols])  # depth of the facade seen in each column
        keep = zc < FAR
        cols, zc = cols[keep], zc[keep]
        zw = (zc + cam_z) % LOOP
        for bside, z0, z1, bh, colour in layout["blocks"]:
            if bside != s:
                continue
            hit = (zw >= z0) & (zw < z1)
            for c, zz, zzw in zip(cols[hit], zc[hit], zw[hit], strict=True):
                top = int(max(0, yh + f * (CAM_HEIGHT - bh) / zz))
                bottom = int(min(h, yh + f * CAM_HEIGHT / zz))
                if bottom <= top:
                    continue
                lab[top:bottom, c] = C["building"]
                rows = np.arange(top, bottom)
                y_world = CAM_HEIGHT - (rows - yh) * zz / f
                window = (
                    ((y_world % 3.0) > 1.0)
                    & ((y_world % 3.0) < 2.2)
                    & ((zzw % 3.0) > 0.8)
                    & ((zzw % 3.0) < 2.2)
                )
                window &= y_world > 2.5
                img[top:bottom, c] = np.where(window[:, None], colour * 0.35, colour)
        for fside, z0, z1 in layout["fences"]:
            if fside != s:
                continue
            zf = f * (ROAD_HALF + SIDEWALK) / np.abs(col[cols])
            zfw = (zf + cam_z) % LOOP
            hit = (zfw >= z0) & (zfw < z1) & (zf > NEAR)
            for c, zz, zzw in zip(cols[hit], zf[hit], zfw[hit], strict=True):
                top = int(max(0, yh + f * (CAM_HEIGHT - 1.2) / zz))
                bottom = int(min(h, yh + f * CAM_HEIGHT / zz))
                lab[top:bottom, c] = C["fence"]
                bar = (zzw % 0.5) < 0.15
                img[top:bottom, c] = (150, 120, 115) if bar else (200, 170, 160)

    # billboards, far to near: trees, cars, people
    placed = []
    for thing in layout["things"]:
        zr = (thing.z - cam_z) % LOOP
        if NEAR < zr < FAR:
            placed.append((zr, thing))
    for zr, thing in sorted(placed, key=lambda p: -p[0]):
        cx = w / 2 + f * thing.x / zr
        half = f * thing.width / (2 * zr)
        bottom = yh + f * CAM_HEIGHT / zr
        top = yh + f * (CAM_HEIGHT - thing.height) / zr
        x0, x1 = int(max(0, cx - half)), int(min(w, cx + half + 1))
        y0, y1 = int(max(0, top)), int(min(h, bottom + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = ys[y0:y1, x0:x1], xs[y0:y1, x0:x1]
        u = (xx - cx) / max(half, 1e-3)  # -1..1 across
        v = (yy - top) / max(bottom - top, 1e-3)  # 0 top .. 1 bottom
        if thing.kind == "tree":
            canopy = (u**2 + ((v - 0.35) / 0.4) ** 2) < 1.0
            trunk = (np.abs(u) < 0.12) & (v >= 0.5)
            mask = canopy | trunk
            colour = np.where(trunk[..., None], np.array([90, 60, 40]), thing.color)
            shade = 0.75 + 0.5 * rng.random(mask.shape)[..., None]
            pix = colour * np.where(canopy[..., None], shade, 1.0)
            cls = C["vegetation"]
        elif thing.kind == "car":
            mask = (v > 0.05) & ~((v > 0.8) & (np.abs(u) > 0.55) & (np.abs(u) < 0.95))
            window = (v > 0.12) & (v < 0.42) & (np.abs(u) < 0.8)
            wheel = (v > 0.82) & (np.abs(u) > 0.55) & (np.abs(u) < 0.95)
            pix = np.broadcast_to(thing.color, mask.shape + (3,)).astype(np.float32).copy()
            pix[window] = (40, 50, 60)
            pix[wheel] = (15, 15, 15)
            mask |= wheel
            cls = C["car"]
        else:
            head = (u**2 + ((v - 0.08) / 0.08) ** 2 * 0.35) < 0.35
            body = (np.abs(u) < 0.7) & (v > 0.15) & (v < 0.6)
            legs = (np.abs(u) < 0.5) & (v >= 0.6)
            mask = head | body | legs
            pix = np.where(
                head[..., None],
                np.array([210, 170, 140]),
                np.where(legs[..., None], np.array([40, 40, 70]), thing.color),
            )
            cls = C["person"]
        region_img, region_lab = img[y0:y1, x0:x1], lab[y0:y1, x0:x1]
        region_img[mask] = pix[mask]
        region_lab[mask] = cls

    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def generate(
    root: str | Path, streets: int = 6, frames: int = 12, height: int = 120, width: int = 160, seed: int = 0
) -> Path:
    """Write ``streets`` x ``frames`` synthetic frames and colour masks under ``root`` (cached).

    The output is reused when ``root/synthetic.json`` records the same settings.
    """
    root = Path(root)
    spec = {
        "version": GENERATOR_VERSION,
        "streets": streets,
        "frames": frames,
        "height": height,
        "width": width,
        "seed": seed,
    }
    marker = root / "synthetic.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    log.info("generating synthetic streets in %s", root)
    for s in range(streets):
        rng = np.random.default_rng([seed, s])
        layout = _street_layout(rng)
        name = f"street_{s + 1:02d}"
        (root / name / "frames").mkdir(parents=True, exist_ok=True)
        (root / name / "labels").mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            img, lab = render_frame(layout, 3 * t, height, width, rng)
            stem = f"{name}_{3 * t:06d}"
            _save_png(img, root / name / "frames" / f"{stem}.png")
            _save_png(index_to_rgb(lab, PALETTE), root / name / "labels" / f"{stem}.png")
    write_atomic(marker, json.dumps(spec))
    return root


def _save_png(array: np.ndarray, path: Path) -> None:
    """Replace ``path`` in one step: jobs of a sweep that generate the same cache at once never read a
    half-written file (every job writes the same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


class SyntheticStreets(StreetFolders):
    """``data=synthetic``: generates the scenes on first use, then reads them like ``data=vietnam``."""

    def __init__(
        self,
        root: str | Path,
        streets: int = 6,
        frames: int = 12,
        height: int = 120,
        width: int = 160,
        seed: int = 0,
        **kw,
    ) -> None:
        super().__init__(root, **kw)
        self.spec = dict(streets=streets, frames=frames, height=height, width=width, seed=seed)

    def discover(self):
        generate(self.root, **self.spec)
        return super().discover()

    @property
    def frames(self):
        if self._frames is None:
            generate(self.root, **self.spec)
        return super().frames
