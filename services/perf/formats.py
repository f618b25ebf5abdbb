"""Profile output formats: folded stacks (Brendan Gregg's), speedscope JSON, a flame graph SVG."""
from __future__ import annotations

import html
import zlib

FORMATS = ("folded", "speedscope", "svg")


def folded_text(folded: dict[str, int]) -> str:
    return "".join(f"{stack} {n}\n" for stack, n in sorted(folded.items(), key=lambda kv: (-kv[1], kv[0])))


def speedscope(folded: dict[str, int], name: str) -> dict:
    """Speedscope's file format, one "sampled" profile (weights = samples)."""
    frames: list[dict] = []
    index: dict[str, int] = {}
    samples, weights = [], []
    for stack, n in sorted(folded.items(), key=lambda kv: -kv[1]):
        ids = []
        for f in stack.split(";"):
            if f not in index:
                index[f] = len(frames)
                frames.append({"name": f})
            ids.append(index[f])
        samples.append(ids)
        weights.append(n)
    total = sum(weights)
    return {"$schema": "https://www.speedscope.app/file-format-schema.json", "exporter": "eunomia",
            "name": name, "activeProfileIndex": 0, "shared": {"frames": frames},
            "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                          "endValue": total, "samples": samples, "weights": weights}]}


def _tree(folded: dict[str, int]) -> dict:
    root: dict = {"n": 0, "c": {}}
    for stack, n in folded.items():
        node = root
        node["n"] += n
        for f in stack.split(";"):
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += n
    return root


def svg(folded: dict[str, int], title: str, width: int = 1200, row: int = 16) -> str:
    """A static flame graph (root at the bottom); hover shows frame and samples."""
    root = _tree(folded)
    total = root["n"] or 1
    rects: list[str] = []
    depth_max = [0]

    def walk(node: dict, x: float, depth: int) -> None:
        for name, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if w >= 0.5:
                depth_max[0] = max(depth_max[0], depth)
                rects.append((x, depth, w, name, child["n"]))
                walk(child, x, depth + 1)
            x += w

    walk(root, 0.0, 0)
    height = (depth_max[0] + 3) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<text x="4" y="{row - 4}">{html.escape(title)} ({total} samples)</text>']
    for x, depth, w, name, n in rects:
        y = height - (depth + 1) * row
        hue = zlib.crc32(name.encode()) % 60
        color = f"hsl({hue if not name.endswith('_[k]') else 200 + hue // 3},80%,60%)"
        label = html.escape(name)
        text = html.escape(name[: max(0, int(w / 7) - 1)]) if w > 20 else ""
        out.append(f'<g><title>{label} ({n} samples, {n * 100 / total:.1f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="{color}"/>'
                   f'<text x="{x + 2:.1f}" y="{y + row - 4}">{text}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
