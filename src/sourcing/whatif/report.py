"""What-if outputs: KPI and savings tables (CSV, JSON), PNG plots and one HTML report.

Files written by :func:`write_report` into the output folder:

* ``kpis.csv`` / ``kpis.json``: one row per (variant, policy) with
  :data:`~sourcing.whatif.simulate.KPI_COLUMNS` (definitions in
  :meth:`~sourcing.whatif.simulate.SimulationResult.kpis`; money in currency units).
  The JSON also holds the scenario, its variants and edits, the savings
  table and any extra section (the Olist rate-card fit);
* ``savings.csv``: per variant, every optimiser policy against every other
  policy (:func:`savings_table`);
* ``node_volume.csv``: parcels and units per (variant, policy, node);
* ``orders.csv.gz``: every per-order record (money in currency units); one gzip
  member for the header, then one per run (:func:`orders_csv_gz`);
* ``cost_vs_days.png``, ``split_rate.png``, ``node_volume.png`` (matplotlib,
  Agg canvas, no display needed);
* ``report.html``: everything above in one self-contained page (plots
  embedded as base64 PNG, no external resources).
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import numpy as np
import pandas as pd

from sourcing.model import MILLICENTS_PER_UNIT
from sourcing.whatif.scenario import WhatIf
from sourcing.whatif.simulate import KPI_COLUMNS, SimulationResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "KPI_DEFINITIONS",
    "bound_table",
    "format_kpis",
    "kpi_table",
    "node_volume_table",
    "orders_csv_gz",
    "savings_table",
    "write_report",
]

#: One line per KPI, for the report and the JSON.
KPI_DEFINITIONS: Final = {
    "orders": "orders replayed",
    "fill_rate": "orders shipped complete / orders",
    "unit_fill_rate": "units shipped / units ordered",
    "ship_cost_per_order": "carrier charges + handling per shipped order (currency units)",
    "storage_credit_per_order": "storage credit per shipped order (currency units)",
    "net_cost_per_order": "ship cost - storage credit per shipped order: the reference cost",
    "parcels_per_order": "parcels per shipped order",
    "split_rate": "shipped orders with 2+ parcels / shipped orders",
    "mean_delivery_days": "mean of the latest parcel's arrival day, shipped orders",
    "p95_delivery_days": "95th percentile (nearest rank) of the same",
    "solver_ms_per_order": "mean wall time of the policy's decision per order (ms)",
    "bound_net_cost_per_order": (
        "perfect-hindsight lower bound on the net cost per shipped order of any policy that "
        "loses no more units than this one (with a [bound] table)"
    ),
    "gap_closed": (
        "(optimiser_cheapest - this policy) / (optimiser_cheapest - its bound), net cost per "
        "shipped order: the share of the myopic-to-bound gap this policy closes"
    ),
}

_MONEY: Final = ("shipping", "handling", "storage_credit", "cost")
_DECIMALS: Final = {
    "orders": 0,
    "fill_rate": 4,
    "unit_fill_rate": 4,
    "ship_cost_per_order": 2,
    "storage_credit_per_order": 2,
    "net_cost_per_order": 2,
    "parcels_per_order": 3,
    "split_rate": 4,
    "mean_delivery_days": 2,
    "p95_delivery_days": 0,
    "solver_ms_per_order": 2,
    "bound_net_cost_per_order": 2,
    "gap_closed": 3,
}
#: The myopic policy the bound's gap is measured from.
MYOPIC: Final = "optimiser_cheapest"


def kpi_table(whatif: WhatIf) -> pd.DataFrame:
    """One row per (variant, policy), in run order, with every KPI."""
    rows = [
        {"variant": run.variant, "policy": run.result.policy, **run.result.kpis()}
        for run in whatif.runs
    ]
    table = pd.DataFrame(rows, columns=["variant", "policy", *KPI_COLUMNS])
    table["orders"] = table["orders"].astype("int64")
    if whatif.bounds:
        bound_per_order = []
        for run in whatif.runs:
            o = run.result.orders
            bound = whatif.bounds.get(run.variant)
            shipped = int((o["units_shipped"] > 0).sum())
            lost = int(o["units_ordered"].sum() - o["units_shipped"].sum())
            value = math.nan
            if bound is not None and shipped:
                value = bound.cost_bound(lost) / MILLICENTS_PER_UNIT / shipped
            bound_per_order.append(value)
        table["bound_net_cost_per_order"] = bound_per_order
        gap = []
        for _, row in table.iterrows():
            myopic = table[(table["variant"] == row["variant"]) & (table["policy"] == MYOPIC)]
            if myopic.empty:
                gap.append(math.nan)
                continue
            m = float(myopic["net_cost_per_order"].iloc[0])
            lower = float(myopic["bound_net_cost_per_order"].iloc[0])
            own = float(row["net_cost_per_order"])
            gap.append((m - own) / (m - lower) if m - lower > 1e-12 else math.nan)
        table["gap_closed"] = gap
    return table


def bound_table(whatif: WhatIf) -> pd.DataFrame:
    """Per variant with a bound: its numbers (currency units) and how it was found."""
    rows = []
    for variant, bound in whatif.bounds.items():
        periods = bound.periods
        rows.append(
            {
                "variant": variant,
                **bound.summary(),
                "statuses": ", ".join(sorted({p.status for p in periods})),
                "columns": sum(p.columns for p in periods),
            }
        )
    return pd.DataFrame(rows)


def savings_table(kpis: pd.DataFrame) -> pd.DataFrame:
    """Per variant: each ``optimiser_*`` policy against each other non-optimiser policy.

    ``saving_per_order`` = baseline net cost per order - optimiser net cost
    per order (currency units; positive: the optimiser is cheaper);
    ``saving_pct`` = that / baseline net cost per order (NaN unless the
    baseline's is positive); ``days_delta`` = optimiser - baseline mean
    delivery days. Fill rates are listed since per-order costs are over
    shipped orders.
    """
    rows = []
    for variant, group in kpis.groupby("variant", sort=False):
        optimisers = group[group["policy"].str.startswith("optimiser_")]
        baselines = group[~group["policy"].str.startswith("optimiser_")]
        for _, opt in optimisers.iterrows():
            for _, base in baselines.iterrows():
                saving = base["net_cost_per_order"] - opt["net_cost_per_order"]
                rows.append(
                    {
                        "variant": variant,
                        "optimiser": opt["policy"],
                        "baseline": base["policy"],
                        "baseline_net_cost_per_order": base["net_cost_per_order"],
                        "optimiser_net_cost_per_order": opt["net_cost_per_order"],
                        "saving_per_order": saving,
                        "saving_pct": 100 * saving / base["net_cost_per_order"]
                        if base["net_cost_per_order"] > 0
                        else math.nan,
                        "days_delta": opt["mean_delivery_days"] - base["mean_delivery_days"],
                        "baseline_fill_rate": base["fill_rate"],
                        "optimiser_fill_rate": opt["fill_rate"],
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "variant",
            "optimiser",
            "baseline",
            "baseline_net_cost_per_order",
            "optimiser_net_cost_per_order",
            "saving_per_order",
            "saving_pct",
            "days_delta",
            "baseline_fill_rate",
            "optimiser_fill_rate",
        ],
    )


def node_volume_table(whatif: WhatIf) -> pd.DataFrame:
    """Parcels and units per (variant, policy, node), every node listed."""
    frames = []
    for run in whatif.runs:
        volume = run.result.node_volume().reset_index()
        volume.insert(0, "policy", run.result.policy)
        volume.insert(0, "variant", run.variant)
        frames.append(volume)
    if not frames:
        return pd.DataFrame(columns=["variant", "policy", "node_id", "parcels", "units"])
    return pd.concat(frames, ignore_index=True)


def _rounded(kpis: pd.DataFrame) -> pd.DataFrame:
    out = kpis.copy()
    for column, decimals in _DECIMALS.items():
        if column in out:
            out[column] = out[column].round(decimals)
    return out


def format_kpis(kpis: pd.DataFrame) -> str:
    """The KPI table as aligned text for a terminal."""
    short = {
        "fill_rate": "fill",
        "unit_fill_rate": "unit_fill",
        "ship_cost_per_order": "ship_cost",
        "storage_credit_per_order": "credit",
        "net_cost_per_order": "net_cost",
        "parcels_per_order": "parcels",
        "split_rate": "split",
        "mean_delivery_days": "days",
        "p95_delivery_days": "p95_days",
        "solver_ms_per_order": "ms",
        "bound_net_cost_per_order": "bound",
    }
    table = _rounded(kpis).rename(columns=short)
    return table.to_string(index=False, na_rep="-")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _json_safe(v) for k, v in row.items()} for row in frame.to_dict(orient="records")
    ]


def _variants(whatif: WhatIf) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "description": v.description,
            "edits": [e.describe() for e in v.edits],
        }
        for v in whatif.scenario.variants
        if any(run.variant == v.name for run in whatif.runs)
    ]


def _orders_rows(variant: str, result: SimulationResult) -> pd.DataFrame:
    frame = result.orders.copy()
    for column in _MONEY:
        frame[column] = frame[column] / MILLICENTS_PER_UNIT
    frame.insert(0, "policy", result.policy)
    frame.insert(0, "variant", variant)
    return frame


def _gzip(text: str) -> bytes:
    """One gzip member; no write time in its header, so the same text gives the same bytes."""
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def orders_csv_gz(variant: str, result: SimulationResult) -> bytes:
    """One replay's rows of ``orders.csv.gz`` (no header), as one gzip member.

    ``orders.csv.gz`` is the header's member followed by every run's, in run
    order: a multi-member gzip file whose text is the table's CSV. Each member
    is made on its own, so on Dask each replay's is compressed on its worker
    while the others replay (:meth:`~sourcing.whatif.scenario.PreparedScenario.run`
    with ``orders_csv``).
    """
    return _gzip(_orders_rows(variant, result).to_csv(index=False, header=False))


def _orders_csv_header(whatif: WhatIf) -> bytes:
    columns = ["variant", "policy", *whatif.runs[0].result.orders.columns]
    return _gzip(pd.DataFrame(columns=columns).to_csv(index=False))


# ------------------------------------------------------------------- plots


def _png(draw: Callable[..., None], *args: Any) -> bytes:
    """The PNG that ``draw(*args, file)`` writes (on a Dask worker or here)."""
    buffer = io.BytesIO()
    draw(*args, buffer)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    # Imported by the first plot, not with this module: with --workers the plots
    # are drawn on the workers, and this process never needs matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


_MARKERS: Final = "osD^v<>ph*"


def _plot_cost_vs_days(kpis: pd.DataFrame, path: Path | BinaryIO) -> None:
    figure = _figure(8.5, 5.5)
    axes = figure.add_subplot()
    policies = list(dict.fromkeys(kpis["policy"]))
    variants = list(dict.fromkeys(kpis["variant"]))
    colours = {p: f"C{i % 10}" for i, p in enumerate(policies)}
    for _, row in kpis.iterrows():
        axes.scatter(
            row["mean_delivery_days"],
            row["net_cost_per_order"],
            color=colours[row["policy"]],
            marker=_MARKERS[variants.index(row["variant"]) % len(_MARKERS)],
            s=60,
            edgecolors="black",
            linewidths=0.5,
        )
    for p in policies:
        axes.scatter([], [], color=colours[p], label=p, s=40)
    if len(variants) > 1:
        for i, v in enumerate(variants):
            axes.scatter([], [], color="grey", marker=_MARKERS[i % len(_MARKERS)], label=v, s=40)
    axes.set_xlabel("mean delivery days")
    axes.set_ylabel("net cost per shipped order (currency units)")
    axes.set_title("Cost vs delivery time per policy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.savefig(path, format="png")


def _pareto_front(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """The (days, cost, value) points no other point beats on both days and cost, by days."""
    front: list[tuple[float, float, float]] = []
    for p in sorted(points):
        if not front or p[1] < front[-1][1]:
            front.append(p)
    return front


def _plot_pareto(kpis: pd.DataFrame, sweep: Mapping[str, Any], path: Path | BinaryIO) -> None:
    """One panel per policy: net cost vs mean days at each sweep value, the front joined."""
    points: Mapping[str, Sequence[Any]] = sweep["points"]
    rows = kpis[kpis["variant"].isin(list(points))]
    policies = list(dict.fromkeys(rows["policy"]))
    bases = list(dict.fromkeys(points[v][0] for v in rows["variant"]))
    cols = min(3, max(len(policies), 1))
    n_rows = math.ceil(max(len(policies), 1) / cols)
    figure = _figure(4.2 * cols, 3.4 * n_rows)
    for i, policy in enumerate(policies):
        axes = figure.add_subplot(n_rows, cols, i + 1)
        for j, base in enumerate(bases):
            mine = rows[
                (rows["policy"] == policy)
                & rows["variant"].map(lambda v, b=base: points[v][0] == b)
            ]
            pts = [
                (float(r["mean_delivery_days"]), float(r["net_cost_per_order"]), points[v][1])
                for v, (_, r) in zip(mine["variant"], mine.iterrows(), strict=True)
            ]
            colour = f"C{j % 10}"
            axes.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, s=25, label=base)
            front = _pareto_front(pts)
            axes.plot([p[0] for p in front], [p[1] for p in front], color=colour, lw=1)
            for d, c, value in pts:
                axes.annotate(
                    f"{value:g}", (d, c), fontsize=6, xytext=(3, 2), textcoords="offset points"
                )
        axes.set_title(policy, fontsize=9)
        axes.set_xlabel("mean delivery days", fontsize=8)
        axes.set_ylabel("net cost / order", fontsize=8)
        axes.grid(alpha=0.3)
        if len(bases) > 1:
            axes.legend(fontsize=6)
    figure.suptitle(f"Cost vs days as {sweep['parameter']} varies (labels: its value)")
    figure.savefig(path, format="png")


def _plot_split_rate(kpis: pd.DataFrame, path: Path | BinaryIO) -> None:
    figure = _figure(8.5, 4.8)
    axes = figure.add_subplot()
    policies = list(dict.fromkeys(kpis["policy"]))
    variants = list(dict.fromkeys(kpis["variant"]))
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(policies))
    for i, variant in enumerate(variants):
        rows = kpis[kpis["variant"] == variant].set_index("policy").reindex(policies)
        axes.bar(x + i * width, 100 * rows["split_rate"].to_numpy(), width, label=variant)
    axes.set_xticks(x + width * (len(variants) - 1) / 2, policies, rotation=20, ha="right")
    axes.set_ylabel("split rate (% of shipped orders with 2+ parcels)")
    axes.set_title("Split shipments per policy")
    axes.grid(axis="y", alpha=0.3)
    if len(variants) > 1:
        axes.legend(fontsize=8)
    figure.savefig(path, format="png")


def _plot_node_volume(volume: pd.DataFrame, path: Path | BinaryIO, top: int = 15) -> None:
    variants = list(dict.fromkeys(volume["variant"]))
    figure = _figure(9.0, 1.0 + 0.32 * top * max(len(variants), 1))
    for i, variant in enumerate(variants):
        axes = figure.add_subplot(len(variants), 1, i + 1)
        table = volume[volume["variant"] == variant].pivot_table(
            index="node_id", columns="policy", values="units", aggfunc="sum", sort=False
        )
        totals = table.sum(axis=0).replace(0, 1)
        share = 100 * table / totals
        rows = share.max(axis=1).sort_values(ascending=False).index[:top]
        data = share.loc[rows]
        image = axes.imshow(data.to_numpy(), aspect="auto", cmap="Blues")
        axes.set_yticks(range(len(rows)), list(rows), fontsize=7)
        axes.set_xticks(
            range(data.shape[1]), list(data.columns), rotation=20, ha="right", fontsize=7
        )
        for (r, c), value in np.ndenumerate(data.to_numpy()):
            axes.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=6)
        axes.set_title(
            f"{variant}: % of units shipped per node (top {len(rows)} nodes)", fontsize=9
        )
        figure.colorbar(image, ax=axes, shrink=0.8)
    figure.savefig(path, format="png")


# -------------------------------------------------------------------- HTML

_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
.wide{overflow-x:auto}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f3f7;max-width:7.5em;font-weight:600}
td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
code{background:#f4f4f4;padding:0 3px}.muted{color:#666;font-size:0.9em}
"""

#: Decimals of the savings table's columns in the report.
_SAVINGS_DECIMALS: Final = {
    "baseline_net_cost_per_order": 2,
    "optimiser_net_cost_per_order": 2,
    "saving_per_order": 2,
    "saving_pct": 1,
    "days_delta": 2,
    "baseline_fill_rate": 4,
    "optimiser_fill_rate": 4,
}


def _html_table(frame: pd.DataFrame, decimals: Mapping[str, int] | None = None) -> str:
    """An HTML table; float columns with ``decimals[column]`` decimals (default 2), "-" for NaN.

    Headers show the column names with spaces for underscores, so they wrap.
    """
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            places = (decimals or {}).get(str(column), 2)
            shown[column] = [
                "-" if not math.isfinite(v) else f"{v:,.{places}f}" for v in shown[column]
            ]
    shown.columns = [str(c).replace("_", " ") for c in shown.columns]  # headers wrap at spaces
    table = shown.to_html(index=False, na_rep="-", border=0, escape=True)
    return f"<div class='wide'>{table}</div>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(
    whatif: WhatIf,
    kpis: pd.DataFrame,
    savings: pd.DataFrame,
    top_nodes: pd.DataFrame,
    plots: Sequence[tuple[Path, str]],
) -> str:
    s = whatif.scenario
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>What-if: {e(s.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>What-if: {e(s.name)}</h1>",
        f"<p>{e(s.description)}</p>" if s.description else "",
        f"<p class='muted'>Scenario file <code>{e(str(s.file))}</code>; "
        f"network: {e(whatif.network)}; {whatif.orders:,} orders per run; generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
        "<h2>Variants</h2><ul>",
    ]
    for v in _variants(whatif):
        edits = "; ".join(v["edits"]) or "no edits (the base network)"
        desc = f" {e(v['description'])}" if v["description"] else ""
        parts.append(f"<li><b>{e(v['name'])}</b>: {e(edits)}.{desc}</li>")
    parts.append("</ul><h2>KPIs per variant and policy</h2>")
    parts.append(_html_table(kpis, _DECIMALS))
    parts.append("<details><summary>KPI definitions</summary><ul>")
    parts.extend(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in KPI_DEFINITIONS.items())
    parts.append("</ul></details>")
    if not savings.empty:
        parts.append("<h2>Optimiser savings against each baseline</h2>")
        parts.append(
            "<p class='muted'>saving per order = baseline net cost per order - optimiser net "
            "cost per order; positive means the optimiser is cheaper. days_delta = optimiser - "
            "baseline mean delivery days.</p>"
        )
        parts.append(_html_table(savings, _SAVINGS_DECIMALS))
    if whatif.bounds:
        parts.append("<h2>Perfect-hindsight bound</h2>")
        parts.append(
            "<p class='muted'>The least cost any policy could reach knowing every order in "
            "advance, with the same stock, top-ups and daily capacity (column generation with "
            "a Lagrangian lower bound, <code>sourcing.forward.hindsight</code>). "
            "<code>lower_bound_penalised</code> bounds cost + penalty x lost units; a policy's "
            "<code>bound_net_cost_per_order</code> is that bound less the penalty of the units "
            "it lost, per shipped order. <code>plan_cost</code>: a clairvoyant plan found from "
            "the bound's columns and replayed by the evaluator; <code>gap</code> = (plan - "
            "bound) / plan, the bound's own gap.</p>"
        )
        parts.append(_html_table(bound_table(whatif), {"gap": 5, "seconds": 1}))
    parts.append("<h2>Plots</h2>")
    parts.extend(_image(path, alt) for path, alt in plots)
    fit = whatif.extras.get("rate_fit")
    if fit:
        parts.append("<h2>Rate card fitted to the real freight and delivery times</h2>")
        parts.append(
            f"<p>Fitted on orders purchased before {e(str(fit['holdout_from']))}; quality "
            "reported on the held-back orders (R², mean absolute error, bias = mean "
            "predicted - actual).</p>"
        )
        quality = pd.DataFrame(
            [
                {"target": target, "set": split, **fit[target][split]}
                for target in ("freight_brl", "delivery_days")
                for split in ("train", "holdout")
            ]
        )
        parts.append(_html_table(quality, {"r2": 3, "mae": 2, "bias": 2}))
        parts.append(_html_table(pd.DataFrame(fit["bands"])))
    olist = whatif.extras.get("olist")
    if olist:
        parts.append("<h2>Olist data</h2><ul>")
        parts.extend(f"<li><code>{e(str(k))}</code>: {e(str(v))}</li>" for k, v in olist.items())
        parts.append(
            "</ul><p class='muted'>Data: Olist, \"Brazilian E-Commerce Public Dataset by "
            'Olist" (CC BY-NC-SA 4.0).</p>'
        )
    parts.append("<h2>Busiest nodes</h2>")
    parts.append(_html_table(top_nodes))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_report(whatif: WhatIf, out_dir: Path, client: Any | None = None) -> list[Path]:
    """Write every output file into ``out_dir`` (created if needed); returns their paths.

    With ``client`` (the ``distributed.Client`` that ran the replays) the
    plots are drawn on its workers, which are idle by then, while this
    process writes the tables; the files are the same either way.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kpis = kpi_table(whatif)
    savings = savings_table(kpis)
    volume = node_volume_table(whatif)
    written: list[Path] = []

    def target(name: str) -> Path:
        path = out_dir / name
        written.append(path)
        return path

    drawings: list[tuple[str, str, Callable[..., None], tuple[Any, ...]]] = [
        (
            "cost_vs_days.png",
            "net cost per order vs mean delivery days",
            _plot_cost_vs_days,
            (kpis,),
        ),
        ("split_rate.png", "split rate per policy", _plot_split_rate, (kpis,)),
        ("node_volume.png", "share of units per node", _plot_node_volume, (volume,)),
    ]
    sweep = whatif.extras.get("sweep")
    if sweep:
        drawings.append(
            (
                "pareto.png",
                "cost vs days per policy over the sweep",
                _plot_pareto,
                (kpis, sweep),
            )
        )
    # The per-order file: each run's member as the replay made it (on Dask: on its
    # worker, while the others replayed), else made now (on the workers if any).
    missing = [run for run in whatif.runs if run.orders_csv_gz is None]
    made = (
        [
            client.submit(
                orders_csv_gz,
                run.variant,
                run.result,
                key=f"whatif-table-orders-{i}-{uuid.uuid4().hex[:12]}",
                priority=2,
            )
            for i, run in enumerate(missing)
        ]
        if client is not None
        else []
    )
    pending = (
        {
            name: client.submit(
                _png,
                draw,
                *args,
                key=f"whatif-plot-{name.removesuffix('.png')}-{uuid.uuid4().hex[:12]}",
                priority=int(draw is _plot_node_volume),
            )
            for name, _, draw, args in drawings
        }
        if client is not None
        else {}
    )

    _rounded(kpis).to_csv(target("kpis.csv"), index=False)
    savings.round(6).to_csv(target("savings.csv"), index=False)
    volume.to_csv(target("node_volume.csv"), index=False)
    if whatif.runs:
        members = iter(
            [future.result() for future in made]
            if made
            else [orders_csv_gz(run.variant, run.result) for run in missing]
        )
        target("orders.csv.gz").write_bytes(
            b"".join(
                [_orders_csv_header(whatif)]
                + [
                    run.orders_csv_gz if run.orders_csv_gz is not None else next(members)
                    for run in whatif.runs
                ]
            )
        )
    else:
        target("orders.csv.gz").write_bytes(_gzip(pd.DataFrame().to_csv(index=False)))
    document = {
        "scenario": whatif.scenario.name,
        "description": whatif.scenario.description,
        "file": str(whatif.scenario.file),
        "network": whatif.network,
        "orders": whatif.orders,
        "variants": _variants(whatif),
        "definitions": KPI_DEFINITIONS,
        "kpis": _records(kpis),
        "savings": _records(savings),
        "bounds": _records(bound_table(whatif)) if whatif.bounds else [],
        **{str(k): v for k, v in whatif.extras.items()},
    }
    target("kpis.json").write_text(
        json.dumps(_json_safe(document), indent=2) + "\n", encoding="utf-8"
    )

    plots: list[tuple[Path, str]] = []
    for name, caption, draw, args in drawings:
        future = pending.get(name)
        path = target(name)
        path.write_bytes(future.result() if future is not None else _png(draw, *args))
        plots.append((path, caption))

    busiest = (
        volume.assign(total=volume.groupby("node_id")["units"].transform("sum"))
        .sort_values(["total", "node_id"], ascending=[False, True])
        .pivot_table(
            index="node_id",
            columns=["variant", "policy"],
            values="units",
            aggfunc="sum",
            fill_value=0,
            sort=False,
        )
        .head(10)
        .reset_index()
    )
    busiest.columns = [
        " / ".join(str(c) for c in col if c) if isinstance(col, tuple) else str(col)
        for col in busiest.columns
    ]
    target("report.html").write_text(_html(whatif, kpis, savings, busiest, plots), encoding="utf-8")
    return written
