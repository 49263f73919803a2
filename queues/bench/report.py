"""Turn benchmark results into a table and an SVG chart (no plotting library needed)."""

from __future__ import annotations

from xml.sax.saxutils import escape


def table(results: list[dict]) -> str:
    """A Markdown table of one row per batch size."""
    lines = [
        "| batch | sent msg/s | acked msg/s | send p50 / p99 ms | receive p50 / p99 ms | ack p50 / p99 ms | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        cells = [
            str(r["batch"]),
            f"{r['sent_per_s']:,.0f}",
            f"{r['acked_per_s']:,.0f}",
            *(_ms(r["latency_ms"][op]) for op in ("send", "receive", "ack")),
            str(r["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(latency: dict) -> str:
    if latency["p50"] is None:
        return "-"
    return f"{latency['p50']:.1f} / {latency['p99']:.1f}"


def svg_chart(results: list[dict], title: str) -> str:
    """Grouped bars: sent and acked messages per second for each batch size."""
    width, height, left, bottom, top = 640, 320, 70, 40, 40
    plot_h = height - bottom - top
    peak = max([1.0, *(max(r["sent_per_s"], r["acked_per_s"]) for r in results)])
    group_w = (width - left - 20) / max(1, len(results))
    bar_w = group_w / 3
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12">',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
    ]
    for i in range(5):
        value = peak * i / 4
        y = height - bottom - plot_h * i / 4
        parts.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">{value:,.0f}</text>')
        parts.append(f'<line x1="{left}" y1="{y:.0f}" x2="{width - 10}" y2="{y:.0f}" stroke="#ddd"/>')
    for index, r in enumerate(results):
        x0 = left + index * group_w + bar_w / 2
        for offset, key, colour in ((0, "sent_per_s", "#4e79a7"), (1, "acked_per_s", "#59a14f")):
            h = plot_h * r[key] / peak
            parts.append(
                f'<rect x="{x0 + offset * bar_w:.1f}" y="{height - bottom - h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{key} {r[key]:,.0f}</title></rect>'
            )
        parts.append(
            f'<text x="{x0 + bar_w:.1f}" y="{height - bottom + 16}" text-anchor="middle">batch {r["batch"]}</text>'
        )
    parts.append(f'<text x="{width - 150}" y="{top}" fill="#4e79a7">■ sent msg/s</text>')
    parts.append(f'<text x="{width - 150}" y="{top + 16}" fill="#59a14f">■ acked msg/s</text>')
    parts.append("</svg>")
    return "\n".join(parts)
