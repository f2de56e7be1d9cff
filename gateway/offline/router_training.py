"""`gateway router-train` and `gateway router-eval`: fit the complexity classifier on labelled
prompts, and measure it against baselines in the same run.

A labelled file is JSON lines: `{"prompt": "..."}` or `{"messages": [...]}`, with `"tier"` and
optionally `"split"` ("train" or "test"). Training uses the train rows of each file it is given (all
rows of a file none of whose rows says), evaluation the test rows. A set measured once as unseen
becomes train rows afterwards: it is no longer unseen.

Training: a multinomial logistic head over the standardised features and the embedding, fitted by
gradient descent with L2; kNN over the training embeddings; the head's weight in the blend, k and
the L2 strength picked by 5-fold cross-validation; then one threshold per tier boundary on the
cross-validated scores, each maximising accuracy with an under-route counted as w errors, for the
smallest w (least over-routing, so least cost) that keeps cross-validated under-routing at or
below `UNDER_TARGET` (sending a hard prompt to a small model costs more than the reverse).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gateway.routing.classifier import ComplexityModel, pick, softmax
from gateway.routing.features import features
from gateway.text import conversation, embedded_text, text_tokens

OUTPUT_TOKENS = 400
"""Answer length assumed for every prompt when pricing a routing (the same for every tier)."""
UNDER_WEIGHT = 2.0
"""How many errors an under-route counts as while the head, blend and k are chosen."""
UNDER_TARGET = 0.025
"""Cross-validated under-routing the thresholds must keep to. Unseen prompts under-routed about 3
points more than cross-validation said (6.7% against targets of 4% and 3.5%, loadtest/RESULTS.md).
With the proof / compose / lookup features, nested cross-validation over 528 prompts put 2.5%
at 1.5-1.7% under-routing for 91-92% accuracy and 1.05-1.09x the oracle's cost; the two unseen
sets measured since had no under-routing at all, and cost 1.22x and 1.03x the oracle's."""


class Labelled(msgspec.Struct):
    """One labelled request. Fields other than these (`kind`, `lang`, a second reader's `tier_b`,
    any column of one's own) are kept in `extra`, for reports by that column."""

    tier: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    split: str = ""
    source: str = ""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"messages": self.messages} if self.messages is not None else {"prompt": self.prompt or ""}
        if self.tools:
            payload["tools"] = self.tools
        if self.response_format:
            payload["response_format"] = self.response_format
        return payload

    def text(self) -> str:
        """What is embedded, as in the gateway."""
        return embedded_text(self.payload()) or ""

    def column(self, name: str) -> str:
        """The row's value of a column (a field or an extra one), as text; "" when absent."""
        value = getattr(self, name, None) if name in self.__struct_fields__ else self.extra.get(name)
        return "" if value is None else str(value)


_FIELDS = frozenset(Labelled.__struct_fields__) - {"extra"}


def read_labelled(path: Path, sources: Sequence[str] = (), label: str = "tier") -> list[Labelled]:
    """The labelled rows of `path` (of `sources` only, when given), labelled by the column `label`
    (`tier`, or another reader's column such as `tier_b`)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                raw = msgspec.json.decode(line)
                if not isinstance(raw, dict):
                    raise msgspec.ValidationError("a row is a JSON object")
                if label != "tier":
                    if label not in raw:
                        raise msgspec.ValidationError(f"no `{label}` column")
                    raw = raw | {"tier": raw[label], "tier_a": raw.get("tier")}
                known = {k: v for k, v in raw.items() if k in _FIELDS}
                row = msgspec.convert(known | {"extra": {k: v for k, v in raw.items() if k not in _FIELDS}}, Labelled)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise SystemExit(f"{path}:{number}: {exc}") from None
            if row.prompt is None and row.messages is None:
                raise SystemExit(f"{path}:{number}: needs `prompt` or `messages`")
            rows.append(row)
    if sources:
        rows = [r for r in rows if r.source in sources]
        if not rows:
            raise SystemExit(f"{path} has no rows from {', '.join(sources)}")
    return rows


def split(rows: Sequence[Labelled], name: str) -> list[Labelled]:
    marked = [r for r in rows if r.split == name]
    return marked if marked or any(r.split for r in rows) else list(rows)


Embed = Callable[[list[str]], np.ndarray]


@dataclass
class Data:
    feats: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    tokens: np.ndarray

    @classmethod
    def build(cls, rows: Sequence[Labelled], tiers: Sequence[str], embed: Embed) -> Data:
        unknown = {r.tier for r in rows} - set(tiers)
        if unknown:
            raise SystemExit(f"tiers not known to the model: {sorted(unknown)} (it knows {list(tiers)})")
        vectors = np.vstack([embed([r.text() for r in rows[i : i + 32]]) for i in range(0, len(rows), 32)])
        return cls(
            feats=np.array([features(r.payload()) for r in rows], dtype=np.float32),
            vectors=vectors.astype(np.float32),
            labels=np.array([list(tiers).index(r.tier) for r in rows]),
            tokens=np.array([text_tokens(conversation(r.payload()).everything) for r in rows]),
        )

    def take(self, index: np.ndarray) -> Data:
        return Data(self.feats[index], self.vectors[index], self.labels[index], self.tokens[index])


def _fit_head(data: Data, tiers: int, l2: float, steps: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean = data.feats.mean(axis=0)
    scale = data.feats.std(axis=0) + 1e-3
    x = np.hstack([(data.feats - mean) / scale, data.vectors * np.sqrt(data.vectors.shape[1])])  # as ComplexityModel.gain
    y = np.eye(tiers)[data.labels]
    w = np.zeros((tiers, x.shape[1]))
    b = np.zeros(tiers)
    velocity_w, velocity_b = np.zeros_like(w), np.zeros_like(b)
    for _ in range(steps):  # full-batch gradient descent with momentum
        p = softmax(x @ w.T + b)
        grad_w = (p - y).T @ x / len(x) + l2 * w
        grad_b = (p - y).mean(axis=0)
        velocity_w = 0.9 * velocity_w - 0.5 * grad_w
        velocity_b = 0.9 * velocity_b - 0.5 * grad_b
        w, b = w + velocity_w, b + velocity_b
    return mean, scale, w.astype(np.float32), b.astype(np.float32)


def fit(
    data: Data, tiers: Sequence[str], *, l2: float, blend: float, k: int, thresholds: Sequence[float] | None = None
) -> ComplexityModel:
    mean, scale, w, b = _fit_head(data, len(tiers), l2)
    return ComplexityModel(
        tiers=tuple(tiers),
        mean=mean,
        scale=scale,
        weights=w,
        bias=b,
        exemplars=data.vectors,
        exemplar_tiers=data.labels,
        k=k,
        blend=blend,
        thresholds=tuple(thresholds) if thresholds else tuple(np.linspace(0, 1, len(tiers) + 1)[:-1] + 0.5 / len(tiers)),
    )


def train(data: Data, tiers: Sequence[str], folds: int = 5, seed: int = 0) -> tuple[ComplexityModel, dict[str, float]]:
    """Pick L2, blend and k by cross-validation, then thresholds on the cross-validated scores."""
    order = np.random.default_rng(seed).permutation(len(data.labels))
    parts = np.array_split(order, folds)
    strengths = (1e-3, 1e-2, 1e-1)
    grid = list(itertools.product(strengths, (0.0, 0.25, 0.5, 0.75, 1.0), (5, 9)))
    rests = [data.take(np.concatenate([p for j, p in enumerate(parts) if j != i])) for i in range(folds)]
    # The head depends on neither blend nor k: fit it once per fold and strength.
    fitted = {(l2, i): fit(rest, tiers, l2=l2, blend=1.0, k=5) for l2 in strengths for i, rest in enumerate(rests)}
    best: tuple[float, tuple[float, float, int], np.ndarray] | None = None
    for l2, blend, k in grid:
        scores = np.zeros(len(data.labels))
        for i, held in enumerate(parts):
            model = dataclasses.replace(fitted[(l2, i)], blend=blend, k=k)
            for j in held:
                scores[j] = model.score(model.probabilities(data.feats[j], data.vectors[j]))
        thresholds = fit_thresholds(scores, data.labels, len(tiers))
        routed = np.array([pick(s, thresholds) for s in scores])
        objective = float(np.mean(routed == data.labels) - UNDER_WEIGHT * np.mean(routed < data.labels))
        if best is None or objective > best[0]:
            best = (objective, (l2, blend, k), scores)
    assert best is not None
    _, (l2, blend, k), scores = best
    for weight in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0):
        thresholds = fit_thresholds(scores, data.labels, len(tiers), weight)
        routed = np.array([pick(s, thresholds) for s in scores])
        if np.mean(routed < data.labels) <= UNDER_TARGET:
            break
    model = fit(data, tiers, l2=l2, blend=blend, k=k, thresholds=thresholds)
    chosen = {"l2": l2, "blend": blend, "k": k, "under_weight": weight}
    return model, chosen | {
        "cv_accuracy": float(np.mean(routed == data.labels)),
        "cv_under": float(np.mean(routed < data.labels)),
    }


def fit_thresholds(scores: np.ndarray, labels: np.ndarray, tiers: int, under_weight: float = UNDER_WEIGHT) -> list[float]:
    """One threshold per boundary, ascending: each maximises the boundary's accuracy, an
    under-route (a label at or above the boundary scored below it) counting `under_weight` times."""
    thresholds = [0.0]
    for boundary in range(1, tiers):
        above = labels >= boundary
        best_t, best_value = thresholds[-1], -np.inf
        for t in np.linspace(thresholds[-1], 1.0, 101):
            sent_up = scores >= t
            value = np.sum(sent_up == above) - (under_weight - 1) * np.sum(above & ~sent_up)
            if value > best_value:
                best_t, best_value = float(t), value
        thresholds.append(best_t)
    return thresholds


# Evaluation


@dataclass(frozen=True)
class Report:
    name: str
    routed: np.ndarray
    labels: np.ndarray
    cost: float
    """Relative to sending everything to the largest tier."""

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.routed == self.labels))

    @property
    def under(self) -> float:
        return float(np.mean(self.routed < self.labels))

    @property
    def over(self) -> float:
        return float(np.mean(self.routed > self.labels))


def relative_cost(routed: np.ndarray, tokens: np.ndarray, prices: Sequence[tuple[float, float]]) -> float:
    """Cost of a routing over the cost of sending every prompt to the last (largest) tier."""

    def cost(tier: int, n: float) -> float:
        return (n * prices[tier][0] + OUTPUT_TOKENS * prices[tier][1]) / 1e6

    largest = sum(cost(len(prices) - 1, n) for n in tokens)
    return sum(cost(int(t), n) for t, n in zip(routed, tokens, strict=True)) / largest if largest else float("nan")


_KEYWORDS_LARGE = ("prove", "derive", "design", "architect", "implement", "optimi", "distributed", "algorithm", "analy")
_KEYWORDS_MEDIUM = ("explain", "write", "summar", "compare", "how does", "how do", "create", "plan", "describe")


def keyword_rules(text: str, tiers: int) -> int:
    """The rules peers ship: hard words go to the largest tier, task words to the middle one."""
    lowered = text.lower()
    if any(k in lowered for k in _KEYWORDS_LARGE):
        return tiers - 1
    if any(k in lowered for k in _KEYWORDS_MEDIUM):
        return min(1, tiers - 1)
    return 0


def length_thresholds(train: Data, tiers: int) -> list[float]:
    """Length cut-offs fitted on the training prompts like the model's thresholds (by log length)."""
    scale = np.log1p(train.tokens)
    top = float(scale.max()) or 1.0
    return [t * top for t in fit_thresholds(scale / top, train.labels, tiers)]


def scores_of(model: ComplexityModel, data: Data) -> np.ndarray:
    """The classifier's score (0 smallest .. 1 largest) for each row."""
    return np.array([model.score(model.probabilities(f, v)) for f, v in zip(data.feats, data.vectors, strict=True)])


def evaluate(
    model: ComplexityModel,
    train: Data,
    test: Data,
    texts: Sequence[str],
    prices: Sequence[tuple[float, float]],
    *,
    bias: float = 0.0,
    thresholds: Sequence[float] | None = None,
    scores: np.ndarray | None = None,
    seed: int = 0,
) -> list[Report]:
    tiers = len(model.tiers)
    cuts = thresholds or model.thresholds
    scores = scores_of(model, test) if scores is None else scores
    ours = np.array([pick(float(s) + bias, cuts) for s in scores])
    lengths = length_thresholds(train, tiers)
    by_length = np.array([pick(float(np.log1p(n)), lengths) for n in test.tokens])
    by_keywords = np.array([keyword_rules(t, tiers) for t in texts])
    knn_only = dataclasses.replace(model, blend=0.0)
    by_knn = np.array([int(np.argmax(knn_only._knn(v))) for v in test.vectors])
    rng = np.random.default_rng(seed)
    random_mix = rng.permutation(ours)  # the same tier mix as ours, assigned at random
    rows = [
        ("classifier (this router)", ours),
        ("oracle (the labelled tier)", test.labels),
        ("always largest", np.full(len(test.labels), tiers - 1)),
        ("prompt length (fitted on train)", by_length),
        ("keyword rules", by_keywords),
        ("kNN over MiniLM embeddings only", by_knn),
        ("random at the classifier's tier mix", random_mix),
    ]
    return [Report(name, routed, test.labels, relative_cost(routed, test.tokens, prices)) for name, routed in rows]


def concordance(scores: np.ndarray, labels: np.ndarray) -> float:
    """Of the pairs of rows labelled with different tiers, the share the score orders rightly (the
    larger tier scored higher; a tie counts half). 1 means some thresholds route every row right."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    above = labels[:, None] > labels[None, :]
    if not above.any():
        return float("nan")
    diff = scores[:, None] - scores[None, :]
    right = np.sum(above & (diff > 0)) + 0.5 * np.sum(above & (diff == 0))
    return float(right / above.sum())


def figures(routed: np.ndarray, labels: np.ndarray, tokens: np.ndarray, prices: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Accuracy, under/over-routing, cost against the oracle's and the tiers sent to, for some rows."""
    oracle = relative_cost(labels, tokens, prices)
    cost = relative_cost(routed, tokens, prices)
    return {
        "rows": len(labels),
        "accuracy": round(float(np.mean(routed == labels)), 4),
        "under_routed": round(float(np.mean(routed < labels)), 4),
        "over_routed": round(float(np.mean(routed > labels)), 4),
        "cost_vs_largest": round(cost, 4),
        "cost_vs_oracle": round(cost / oracle, 4) if oracle else None,
        "routed": [int(np.sum(routed == t)) for t in range(len(prices))],
        "labelled": [int(np.sum(labels == t)) for t in range(len(prices))],
    }


def by_column(
    rows: Sequence[Labelled], column: str, routed: np.ndarray, data: Data, prices: Sequence[tuple[float, float]]
) -> dict[str, dict[str, Any]]:
    """`figures` for each value of a column (rows without it grouped under "")."""
    values = np.array([r.column(column) for r in rows])
    return {
        value: figures(routed[values == value], data.labels[values == value], data.tokens[values == value], prices)
        for value in sorted(set(values.tolist()))
    }


SWEEP = tuple(round(b, 2) + 0.0 for b in np.arange(-0.30, 0.301, 0.05))
"""The router's bias values `router-eval --sweep` tries."""


def sweep(
    scores: np.ndarray, data: Data, prices: Sequence[tuple[float, float]], thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """Cost against under-routing across the bias knob: one row per bias."""
    return [
        {"bias": bias} | figures(np.array([pick(float(s) + bias, thresholds) for s in scores]), data.labels, data.tokens, prices)
        for bias in SWEEP
    ]


def render(reports: Sequence[Report], tiers: Sequence[str]) -> list[str]:
    oracle = next((r.cost for r in reports if r.name.startswith("oracle")), float("nan"))
    lines = [
        "| router | accuracy | under-routed | over-routed | cost vs always-largest | cost vs oracle |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(f"| {r.name} | {r.accuracy:.3f} | {r.under:.3f} | {r.over:.3f} | {r.cost:.3f} | {r.cost / oracle:.2f}x |")
    ours = reports[0]
    lines += ["", "confusion (rows: labelled tier, columns: routed tier):", "", "| | " + " | ".join(tiers) + " |"]
    lines.append("|---" * (len(tiers) + 1) + "|")
    for i, name in enumerate(tiers):
        counts = [int(np.sum((ours.labels == i) & (ours.routed == j))) for j in range(len(tiers))]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    return lines


def render_groups(column: str, groups: Mapping[str, Mapping[str, Any]], tiers: Sequence[str]) -> list[str]:
    head = f"| {column} | rows | accuracy | under-routed | over-routed | cost vs oracle | routed ({' / '.join(tiers)}) |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for value, g in groups.items():
        oracle = "-" if g["cost_vs_oracle"] is None else f"{g['cost_vs_oracle']:.2f}x"
        routed = " / ".join(str(n) for n in g["routed"])
        lines.append(
            f"| {value or '(none)'} | {g['rows']} | {g['accuracy']:.3f} | {g['under_routed']:.3f} | "
            f"{g['over_routed']:.3f} | {oracle} | {routed} |"
        )
    return lines


def render_sweep(rows: Sequence[Mapping[str, Any]], default: float) -> list[str]:
    lines = [
        "| bias | accuracy | under-routed | over-routed | cost vs oracle | cost vs always-largest |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " (the router's)" if abs(r["bias"] - default) < 1e-9 else ""
        lines.append(
            f"| {r['bias']:+.2f}{mark} | {r['accuracy']:.3f} | {r['under_routed']:.3f} | {r['over_routed']:.3f} | "
            f"{r['cost_vs_oracle']:.2f}x | {r['cost_vs_largest']:.3f} |"
        )
    return lines


def tier_prices(settings: Any, router: str) -> list[tuple[float, float]]:
    """Per tier of `router`, the mean price (input, output per 1M tokens) of its pool's deployments."""
    prices = []
    for tier in settings.routers[router].tiers.values():
        deployments = settings.pools[tier.pool].deployments
        prices.append(
            (
                sum(d.price.input_per_1m for d in deployments) / len(deployments),
                sum(d.price.output_per_1m for d in deployments) / len(deployments),
            )
        )
    return prices


def describe(model: ComplexityModel, chosen: Mapping[str, float]) -> str:
    return (
        f"tiers {list(model.tiers)}, blend {chosen['blend']} (head) / {1 - chosen['blend']} (kNN), k {chosen['k']}, "
        f"L2 {chosen['l2']}, under-route weight {chosen['under_weight']}, thresholds {[round(t, 3) for t in model.thresholds]}, "
        f"cross-validated accuracy {chosen['cv_accuracy']:.3f}, under-routed {chosen['cv_under']:.3f}"
    )


def train_command(paths: Sequence[Path], out: Path, tiers: Sequence[str] | None) -> str:
    from gateway.cache.embedder import OnnxEmbedder

    rows = [row for path in paths for row in split(read_labelled(path), "train")]
    order = list(tiers) if tiers else [t for t in ("small", "medium", "large") if any(r.tier == t for r in rows)]
    if not order or {r.tier for r in rows} - set(order):
        raise SystemExit("name the tiers, smallest first, with --tiers (the labels are not small/medium/large)")
    embedder = OnnxEmbedder()
    try:
        data = Data.build(rows, order, embedder.embed_now)
    finally:
        embedder.close()
    model, chosen = train(data, order)
    model.save(out)
    return f"{out}: trained on {len(rows)} prompts; {describe(model, chosen)}"


@dataclass
class EvalOptions:
    bias: float | None = None
    train_file: Path | None = None
    sources: Sequence[str] = ()
    label: str = "tier"
    """The column holding the tier each row needs (another reader's: `tier_b`)."""
    by: str = "kind"
    """Report by this column too."""
    as_json: bool = False
    sweep: bool = False
    scores_out: Path | None = None
    """Write each row's score and chosen tier here (JSON lines)."""


def eval_command(path: Path, loaded: Any, router: str, options: EvalOptions | None = None) -> str:
    """What `gateway router-eval` prints: the router against its baselines, on the test rows (of
    `sources` only, when given), overall and by a column; baselines that need fitting are fitted on
    the train rows of `train_file` (default `path`, every source)."""
    from gateway.cache.embedder import OnnxEmbedder

    o = options or EvalOptions()
    settings = loaded.settings
    if router not in settings.routers:
        raise SystemExit(f"{loaded.source} has no router {router!r} (routers: {sorted(settings.routers) or 'none'})")
    spec, model = settings.routers[router], loaded.classifiers[router]
    thresholds = [t.threshold if t.threshold is not None else model.thresholds[i] for i, t in enumerate(spec.tiers.values())]
    train_rows = split(read_labelled(o.train_file or path), "train")
    test_rows = split(read_labelled(path, o.sources, o.label), "test")
    if not train_rows:
        raise SystemExit(f"{o.train_file or path} has no train rows to fit the baselines on (use --train-file)")
    if not test_rows:
        raise SystemExit(f'{path} has no test rows to score: every row is marked "split": "train"')
    embedder = OnnxEmbedder()
    try:
        train_data = Data.build(train_rows, model.tiers, embedder.embed_now)
        test_data = Data.build(test_rows, model.tiers, embedder.embed_now)
        latency = classify_latency(model, test_rows, test_data)
        embedded = classify_latency(model, test_rows, test_data, embed=embedder.embed_now, rounds=2)
    finally:
        embedder.close()
    chosen_bias = spec.bias if o.bias is None else o.bias
    prices = tier_prices(settings, router)
    scores = scores_of(model, test_data)
    reports = evaluate(
        model,
        train_data,
        test_data,
        [r.text() for r in test_rows],
        prices,
        bias=chosen_bias,
        thresholds=thresholds,
        scores=scores,
    )
    ours = reports[0].routed
    if o.scores_out is not None:
        with o.scores_out.open("w") as out:
            for row, score, tier in zip(test_rows, scores, ours, strict=True):
                line = {"score": round(float(score), 4), "routed": model.tiers[int(tier)], "tier": row.tier}
                out.write(json.dumps(line | {k: row.column(k) for k in ("source", o.by) if row.column(k)}) + "\n")
    groups = by_column(test_rows, o.by, ours, test_data, prices)
    swept = sweep(scores, test_data, prices, thresholds) if o.sweep else []
    if o.as_json:
        result = figures(ours, test_data.labels, test_data.tokens, prices) | {
            "router": router,
            "label": o.label,
            "bias": chosen_bias,
            "thresholds": [round(t, 4) for t in thresholds],
            "tiers": list(model.tiers),
            "concordance": round(concordance(scores, test_data.labels), 4),
            f"by_{o.by}": groups,
            "baselines": {r.name: figures(r.routed, r.labels, test_data.tokens, prices) for r in reports[1:]},
            "latency_ms": {"p50": round(latency[0] * 1e3, 4), "p99": round(latency[1] * 1e3, 4)},
        }
        if o.by != "kind":
            result["by_kind"] = by_column(test_rows, "kind", ours, test_data, prices)
        if swept:
            result["sweep"] = swept
        return json.dumps(result, indent=2, ensure_ascii=False)
    lines = [
        f"{len(test_rows)} test prompts labelled by `{o.label}` ({len(train_rows)} for the baselines' fitting); "
        f"router {router!r}, bias {chosen_bias}, thresholds {[round(t, 3) for t in thresholds]}",
        "",
        *render(reports, model.tiers),
        "",
        f"concordance (pairs from different tiers the score orders rightly): {concordance(scores, test_data.labels):.3f}",
        "",
        f"by {o.by}:",
        "",
        *render_groups(o.by, groups, model.tiers),
    ]
    if swept:
        lines += ["", "cost against under-routing across the bias (`routers.<name>.bias`):", ""]
        lines += render_sweep(swept, chosen_bias)
    return "\n".join(
        [
            *lines,
            "",
            f"classifier time per request, embedding excluded: p50 {latency[0] * 1e3:.3f} ms, p99 {latency[1] * 1e3:.3f} ms",
            f"the same with the embedding (one text, in this thread): p50 {embedded[0] * 1e3:.3f} ms, "
            f"p99 {embedded[1] * 1e3:.3f} ms",
            f"cost priced with the pools' prices and {OUTPUT_TOKENS} output tokens per prompt",
        ]
    )


def classify_latency(
    model: ComplexityModel, rows: Sequence[Labelled], data: Data, *, embed: Embed | None = None, rounds: int = 5
) -> tuple[float, float]:
    """p50 and p99 of `decide` (features, head, kNN, reasons) over the rows, with the embedding
    given, or made with `embed` inside the timing."""
    times = []
    for _ in range(rounds):
        for row, vector in zip(rows, data.vectors, strict=True):
            payload = row.payload()
            start = time.perf_counter()
            if embed is not None:
                vector = embed([row.text()])[0]
            model.decide(payload, vector)
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
