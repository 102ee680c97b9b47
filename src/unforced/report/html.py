"""report.html: the comparison table, the figures with a few plain sentences each, sample outputs, settings.

Reads the run directory only (config.yaml, metrics.jsonl, results.json), so it can be rebuilt from a finished run.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import yaml

from unforced.diagnostics.attention import draw_attention
from unforced.errors import UnforcedError
from unforced.report import curves, figures
from unforced.report.page import page as html_page
from unforced.runfiles import atomic_write_text, read_run


def _unit(results: dict) -> str:
    """What one target token is, for the sentences: a character for a character tokenizer (speech), else a token."""
    kind = ((results.get("signature") or {}).get("tokenizer") or {}).get("target") or {}
    return "character" if kind.get("kind") == "char" else "token"


def _growth_sentence(entry: dict, unit: str = "token") -> str:
    overall = (f"{unit.capitalize()} error over all positions: {1 - entry['tf_token_acc']:.1%} teacher-forced, "
               f"{1 - entry['fr_token_acc']:.1%} free-running. ")
    errors = entry["per_position"]["fr_error"]
    tf_errors = entry["per_position"]["tf_error"]
    shown = curves.well_measured(entry["per_position"])
    errors, tf_errors = errors[:shown], tf_errors[:shown]
    if len(errors) < 4:
        return overall
    third = max(1, len(errors) // 3)
    early, late = sum(errors[:third]) / third, sum(errors[-third:]) / third
    tf_early, tf_late = sum(tf_errors[:third]) / third, sum(tf_errors[-third:]) / third
    return overall + (f"Free-running error averages {early:.2f} over the first third of positions and {late:.2f} over the "
            f"last third (teacher-forced: {tf_early:.2f} and {tf_late:.2f}).")


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


SATURATED_ERROR = 0.9  # free-running token error at or above this from some position on: the curves saturate


def saturation(entry: dict) -> int | None:
    """The first (1-based) position from which free-running token error stays at or above SATURATED_ERROR over
    the well-measured positions, if that happens within the first half of them; None otherwise."""
    errors = entry["per_position"]["fr_error"][: curves.well_measured(entry["per_position"])]
    if len(errors) < 4:
        return None
    for start in range(len(errors) // 2 + 1):
        if all(e >= SATURATED_ERROR for e in errors[start:]):
            return start + 1
    return None


def _saturation_sentence(results: dict) -> str:
    saturated = {name: saturation(e) for name, e in results["strategies"].items()}
    saturated = {name: at for name, at in saturated.items() if at is not None}
    if not saturated:
        return ""
    which = ", ".join(f"{html.escape(n)} from position {at}" for n, at in saturated.items())
    return (f"<p class=\"note\"><b>Positional measures saturate here.</b> Free-running token error stays at or above "
            f"{SATURATED_ERROR:.2f} ({which}): once nearly every free-running token is wrong, the per-position "
            f"curves, FR NLL, the gap % and the compounding fit say how fast the model fell off the gold path, "
            f"not how it compounds, and they cannot tell strategies apart. Read the measures that still "
            f"discriminate: on-path NLL, the first divergence and the prefix swap.</p>")


def _metric_cell(metric: dict, key: str) -> str:
    value = metric.get(key)
    return "<td>-</td>" if value is None else f"<td>{value:.2f}</td>"


def _measure_sentences(name: str, entry: dict, swap: dict | None) -> list[str]:
    """One sentence per measure of docs/measures.md, on what it says for this strategy."""
    label = f"<b>{html.escape(name)}</b>"
    measures = entry.get("measures") or {}
    out = []
    if "on_path_nll" in measures:
        on_path, tf = measures["on_path_nll"], entry["tf_nll"]
        out.append(f"{label}: on-path NLL {on_path:.3f} nats per token against teacher-forced {tf:.3f}: scored only "
                   f"where its own prefix still equals gold, "
                   + ("it is no worse off than under teacher forcing." if on_path <= tf * 1.05 else
                      "it is already less sure of gold before it has made any mistake."))
    divergence = measures.get("first_divergence") or {}
    if divergence.get("never") is not None:
        mean = divergence.get("mean")
        out.append(f"{label}: {100 * divergence['never']:.0f}% of test outputs never leave gold; "
                   + (f"the others leave it at step {mean:.1f} on average" if mean is not None else "none leaves it")
                   + f" ({100 * divergence['mean_fraction']:.0f}% of the reference length on the path, averaged "
                   f"over all).")
    if measures.get("length_ratio") is not None:
        ratio = measures["length_ratio"]
        verdict = ("about the reference length" if 0.9 <= ratio <= 1.1 else
                   "shorter than the references: it stops early" if ratio < 0.9 else
                   "longer than the references: it runs on")
        out.append(f"{label}: free-running outputs are {ratio:.2f} times the reference length, {verdict}.")
    oracle = measures.get("oracle")
    if oracle and oracle.get("excess_pct") is not None:
        out.append(f"{label}: the oracle finds {oracle['accumulated_error']:.2f} errors per sequence along its own "
                   f"prefix against {oracle['gold_prefix_error']:.2f} under the gold prefix, an excess of "
                   f"{oracle['excess_pct']:.0f}% ({100 * oracle['excess_share']:.0f}% of its own errors are "
                   f"attributable to exposure bias).")
    for point in (swap or {}).get("positions", []):
        ratio = point.get("own_over_gold")
        out.append(f"{label}: continued after {point['k']} gold tokens it scores {point['after_gold']:.2f} "
                   f"{html.escape(swap['metric'])}, after its own first {point['k']} {point['after_own']:.2f} ("
                   + (f"own / gold {ratio:.2f}" if ratio is not None else "no ratio: the reference side is 0")
                   + f", over {point['rows']} outputs).")
    return out


def _measures_section(results: dict, run_dir: Path) -> str:
    diagnostics = {}
    path = run_dir / "diagnostics.json"
    if path.exists():
        try:
            diagnostics = json.loads(path.read_text(encoding="utf-8")).get("strategies", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            diagnostics = {}  # _diagnostics_section names the broken file
    sentences = []
    for name, entry in results["strategies"].items():
        swap = (diagnostics.get(name) or {}).get("diagnostics", {}).get("prefix_swap")
        sentences += _measure_sentences(name, entry, swap)
    if not sentences:
        return ""
    items = "".join(f"<li>{s}</li>" for s in sentences)
    return (f"<h2>Measures not inflated by misalignment</h2><p>Positional FR NLL scores gold token t after the "
            f"model's own prefix, so one inserted word misaligns every later position. These measures do not "
            f"(formulas, sources and blind spots: docs/measures.md).</p><ul>{items}</ul>")


def _signature_section(results: dict) -> str:
    signature = results.get("signature") or {}
    if not signature:
        return ""
    rows = []
    for key, value in signature.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in value.items())
        rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>")
    return f"<h2>Signature</h2><table class=\"signature\">{''.join(rows)}</table>"


def _figure(key: str, alt: str) -> str:
    return (f"<img src=\"figures/{key}.png\" alt=\"{html.escape(alt)}\"><br><a href=\"figures/{key}.svg\">SVG"
            f"</a>")


def _diagnostics_section(run_dir: Path) -> str:
    """Figures and sentences from diagnostics.json (written by `unforced run` and `unforced gap`)."""
    path = run_dir / "diagnostics.json"
    if not path.exists():
        return "<h2>Diagnostics</h2><p>No diagnostics.json in this run: <code>unforced gap RUN_DIR</code> makes one.</p>"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnforcedError(f"{path}: not valid JSON ({error})") from None
    figure_dir = run_dir / "figures"
    strategies = data.get("strategies", {})
    if not strategies:
        return ""
    sweep_s, divergence_s, recovery_s, compounding_s, prefix_s, attention_s = [], [], [], [], [], []
    for name, entry in strategies.items():
        d = entry["diagnostics"]
        label = f"<b>{html.escape(name)}</b>"
        nll = d["sweep"]["nll"]
        sweep_s.append(f"{label}: NLL {_number(nll[-1])} at ratio {d['sweep']['ratios'][-1]:g} and "
                       f"{_number(nll[0])} at ratio {d['sweep']['ratios'][0]:g}.")
        fit = d["divergence"].get("fit")
        if fit:
            tail = (f"a below 1, so the distance should level off near {_number(fit['plateau_predicted'])}; "
                    f"measured over the last positions: {_number(d['divergence'].get('plateau_measured'))}."
                    if fit.get("plateau_predicted") is not None else
                    f"a above 1: the distance grows by a factor {_number(fit.get('growth_rate'))} per step.")
            divergence_s.append(f"{label}: amplification a = {_number(fit['a'])}, injection b = "
                                f"{_number(fit['b'])}; {tail}")
        for probe in d["recovery"][:2]:
            recovery_s.append(f"{label}, slip at position {probe['position']}: accuracy after it "
                              f"{_number(probe['corrupted_acc_after'])} against {_number(probe['clean_acc_after'])} "
                              f"with a clean prefix (recovery {_number(probe['recovery'], 2)}).")
        comp = d.get("compounding")
        if comp:
            compounding_s.append(f"{label}: per-token NLL c = {_number(comp['c'])} on a clean prefix, d = "
                                 f"{_number(comp['d'])} once off it, first-error rate e = {_number(comp['e'])} per "
                                 f"step; predicted excess {_number(comp['predicted_excess'], 2)} nats per sequence "
                                 f"against {_number(comp['measured_excess'], 2)} measured.")
        kl = d["prefix_divergence"]["kl"]
        prefix_s.append(f"{label}: {_number(kl[0], 2)} nats at length 1, {_number(kl[-1], 2)} at length "
                        f"{d['prefix_divergence']['lengths'][-1]}.")
    sections = [
        ("sweep", "Ratio sweep", figures.sweep,
         "Each point feeds the gold token with the given probability and the model's own greedy token otherwise, "
         "and scores every gold token. Ratio 1 is teacher forcing and ratio 0 free running; the slope between "
         "them is how much the model leans on a gold prefix.", sweep_s),
        ("divergence", "Hidden-state divergence", figures.divergence,
         "The distance between the decoder state along the model's own path and along the gold path, per "
         "position (shaded: one standard deviation). A fit of D_t = a D_(t-1) + b gives how fast a deviation is "
         "amplified (a) and how much new deviation each step brings (b).", divergence_s),
        ("recovery", "Recovery probe", figures.recovery,
         "One wrong token is put into the gold prefix; the lines show accuracy on the tokens after it (thick "
         "pale line: the same positions with a clean prefix). A model that recovers returns to the clean line.",
         recovery_s),
        ("compounding", "Compounding-error model", figures.compounding,
         "Free-running NLL per position (dots) against the absorbing-error chain fitted to it: cost c per token "
         "until the first error, which happens with probability e per step, and d after it.", compounding_s),
        ("prefix_divergence", "Prefix-distribution divergence", figures.prefix_divergence,
         "A Monte Carlo estimate of KL(model prefixes || smoothed n-gram of the data) per prefix length; read it "
         "as a comparison between strategies, since the n-gram stands in for the data.", prefix_s),
    ]
    for name, entry in strategies.items():
        maps = entry["diagnostics"].get("attention")
        if maps:
            file = f"attention-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
            draw_attention(maps, figure_dir / file)
            parting = maps["parting_position"]
            attention_s.append(
                f"<h3>Attention: {html.escape(name)}</h3><img src=\"figures/{file}\" alt=\"attention maps\">"
                f"<p>Test pair {maps['index']}: where the decoder looks in the source when fed the gold prefix (left) "
                f"and its own (right). " + (
                    f"The two decodings part at step {parting}; after it the attention rows differ by up to "
                    f"{max(maps['total_variation'][parting:]):.2f} in total variation."
                    if parting is not None else "The model's own path never leaves the gold one here.") + "</p>")
    parts = [f"<h2>Diagnostics ({html.escape(data.get('split', 'test'))} split, at most "
             f"{data.get('limit') or 'all'} pairs)</h2>"]
    for key, title, draw, explanation, sentences in sections:
        draw(data, figure_dir / f"{key}.png")
        parts.append(f"<h3>{title}</h3>{_figure(key, title)}<p>{explanation} {' '.join(sentences)}</p>")
    return "\n".join(parts + attention_s)


def _seeds_section(results: dict) -> str:
    """Mean and spread over seeds, and in words whether each difference from the first entry is within it."""
    entries = {name: e for name, e in results["strategies"].items() if "spread" in e}
    if not entries:
        return ""
    seeds = results.get("seeds", [])
    rows = []
    for name, entry in entries.items():
        spread = entry["spread"]
        rows.append(f"<tr><td>{html.escape(name)}</td>"
                    f"<td>{spread['fr_nll']['mean']:.3f} ± {spread['fr_nll']['std']:.3f}</td>"
                    f"<td>{spread['gap_pct']['mean']:.1f} ± {spread['gap_pct']['std']:.1f}</td>"
                    f"<td>{spread['metric_fr']['mean']:.2f} ± {spread['metric_fr']['std']:.2f}</td>"
                    + (f"<td>{spread['metric_fr_beam']['mean']:.2f} ± {spread['metric_fr_beam']['std']:.2f}</td>"
                       if "metric_fr_beam" in spread else "<td>-</td>") + "</tr>")
    names = list(entries)
    base = names[0]
    sentences = []
    for name in names[1:]:
        for key, label in (("fr_nll", "free-running NLL"), ("metric_fr", "free-running score"),
                           ("metric_fr_beam", "free-running beam score")):
            if key not in entries[base]["spread"] or key not in entries[name]["spread"]:
                continue
            a, b = entries[base]["spread"][key], entries[name]["spread"][key]
            difference = b["mean"] - a["mean"]
            within = abs(difference) <= a["std"] + b["std"]
            sentences.append(f"{html.escape(name)} against {html.escape(base)}: {label} differs by "
                             f"{difference:+.3f}, {'within' if within else 'outside'} the spread over "
                             f"{len(seeds)} seeds (± {a['std'] + b['std']:.3f}).")
    return (f"<h2>Over {len(seeds)} seeds ({', '.join(map(str, seeds))})</h2><table><tr><th>strategy</th>"
            f"<th>FR NLL</th><th>gap %</th><th>FR score</th><th>FR beam score</th></tr>{''.join(rows)}</table>"
            f"<p>Mean ± standard deviation over seeds; the table above shows the means. A difference within the "
            f"spread is not evidence that one strategy is better. {' '.join(sentences)}</p>")


def _switch_sentence(switches: dict[str, list[dict]]) -> str:
    """Where each chain moved on to its next phase (the `switch` of the config; dotted lines in the figure)."""
    parts = []
    for name, moves in switches.items():
        for move in moves:
            how = (f"validation {move['metric']} had not improved for {move['patience']} evaluations"
                   if move.get("stalled") else f"its budget ended before validation {move['metric']} stalled")
            best = (f"; the next phase started from the best weights, of step {move['best_global_step']} "
                    f"({move['metric']} {move['best']:.4g})" if move.get("best_global_step") is not None else "")
            parts.append(f"{html.escape(name)} left {html.escape(str(move['phase']).split(':')[-1])} at step "
                         f"{move['global_step']}: {how}{best}.")
    return ("Switches (dotted lines): " + " ".join(parts)) if parts else ""


def build_report(run_dir: Path) -> Path:
    """Draw the figures and write report.html; returns its path."""
    run_dir = Path(run_dir)
    config, results, metrics = read_run(run_dir)
    figure_dir = run_dir / "figures"
    figures.per_position(results, figure_dir / "per_position.png")
    figures.training_curves(metrics, figure_dir / "training_curves.png")
    from unforced.diagnostics.probes import mid_training_dips

    dips = mid_training_dips(metrics)
    starts = {name: entry.get("warm_start_from") for name, entry in results["strategies"].items()}
    switches = {name: entry.get("switches") or [] for name, entry in results["strategies"].items()}
    figures.scores(metrics, figure_dir / "scores.png", dips, starts, switches)
    dip_sentence = ("No mid-training dip of the free-running score (a fall of over 10% from its best while "
                    "training went on)." if not dips else
                    "Dips of the free-running score (triangles): " + "; ".join(
                        f"{html.escape(str(d.get('strategy')))} at step {d['step']}, {d['drop']:.2f} below its best"
                        + (f", gold ratio {d['gold_ratio']:.2f}" if d.get("gold_ratio") is not None else "")
                        for d in dips) + ".")
    rows = []
    first = next(iter(results["strategies"].values()), None)
    companions = list((first["metric"].get("companions") or {}) if first else {})  # chrF beside BLEU, CER beside WER
    for name, entry in results["strategies"].items():
        metric, measures = entry["metric"], entry.get("measures") or {}
        others = "".join(_metric_cell((metric.get("companions") or {}).get(c, {}), key)
                         for c in companions for key in ("fr", "fr_beam"))
        divergence = (measures.get("first_divergence") or {}).get("mean_fraction")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{entry['tf_nll']:.3f}</td><td>{entry['fr_nll']:.3f}</td>"
                    f"<td>{entry['gap_pct']:.1f}%</td><td>{_number(measures.get('on_path_nll'))}</td>"
                    f"<td>{_number(divergence, 2)}</td><td>{entry['tf_token_acc']:.3f}</td>"
                    f"<td>{entry['fr_token_acc']:.3f}</td>{_metric_cell(metric, 'fr')}"
                    f"{_metric_cell(metric, 'fr_beam')}{others}<td>{entry['train_seconds']:.1f}</td></tr>")
    metric_name = first["metric"]["name"] if first else ""
    beam = first["metric"].get("beam_size") if first else None
    warnings = sorted({e["metric"]["warning"] for e in results["strategies"].values() if e["metric"].get("warning")})
    warning = "".join(f"<p class=\"note\"><b>Warning:</b> {html.escape(w)}</p>" for w in warnings)
    unit = _unit(results)
    companion_heads = "".join(f"<th>FR {html.escape(c)}</th><th>FR {html.escape(c)} beam</th>" for c in companions)
    sentences = " ".join(f"<b>{html.escape(n)}</b>: {_growth_sentence(e, unit)}"
                         for n, e in results["strategies"].items())
    examples = []
    for name, entry in results["strategies"].items():
        for example in entry.get("examples", [])[:3]:
            image = (f"<br><img src=\"{html.escape(example['image'])}\" width=\"96\" alt=\"test image\">"
                     if example.get("image") else "")
            examples.append(f"<tr><td>{html.escape(name)}{image}</td><td>{html.escape(example['reference'])}</td>"
                            f"<td>{html.escape(example['teacher_forced'])}</td>"
                            f"<td>{html.escape(example['free_running'])}</td></tr>")
    body = f"""<h1>Exposure-bias report: {html.escape(results['task'])}</h1>
<p>Teacher-forced (TF) figures score each gold token after the gold prefix; free-running (FR) figures score it
after the model's own greedy prefix. The gap is FR NLL minus TF NLL, as a share of TF NLL. On-path NLL scores gold
only where the model's own prefix still equals it; "first div." is the share of the reference length the greedy
decode follows before it first leaves gold. The {html.escape(metric_name)} columns score free decodes (greedy, and
a beam{f" of {beam}" if beam else ""}) against every reference{", and so do the companion metrics' (" +
html.escape(", ".join(companions)) + ")" if companions else ""}.</p>
<table><tr><th>strategy</th><th>TF NLL</th><th>FR NLL</th><th>gap</th><th>on-path NLL</th><th>first div.</th>
<th>TF token acc</th><th>FR token acc</th><th>FR {html.escape(metric_name)}</th>
<th>FR {html.escape(metric_name)} beam</th>{companion_heads}<th>train s</th></tr>
{''.join(rows)}</table>
{warning}
{_saturation_sentence(results)}
{_seeds_section(results)}
{_measures_section(results, run_dir)}
<h2>Per-position error</h2>
{_figure("per_position", "per-position error and NLL")}
<p>Each curve is the error rate (left) or the NLL of the gold token (right) at one target position, with gold
prefixes (dashed) and with the model's own prefixes (solid), over the positions that at least
{curves.MIN_SEQUENCES} test sequences reach. Where the solid curve climbs above the dashed one as
positions grow, early mistakes are compounding. {sentences}</p>
<h2>Training curves</h2>
{_figure("training_curves", "training curves")}
<p>Training loss per step (left), and the validation NLL under both decodings at each evaluation (right): the
distance between a strategy's solid and dashed lines is its gap as training goes on.</p>
{_diagnostics_section(run_dir)}
<h2>Scores over training</h2>
{_figure("scores", "validation scores over training")}
<p>The validation score of free-running (greedy) decoding for every strategy. A fine-tuned strategy continues from
its starting model's last evaluation, so its line starts where that model's ends. {dip_sentence}
{_switch_sentence(switches)}</p>
<h2>Sample outputs (test)</h2>
<table><tr><th>strategy</th><th>reference</th><th>teacher-forced argmax</th><th>free-running greedy</th></tr>
{''.join(examples)}</table>
{_signature_section(results)}
<h2>Settings</h2>
<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>"""
    path = run_dir / "report.html"
    atomic_write_text(html_page(f"unforced report: {results['task']}", body), path)
    return path
