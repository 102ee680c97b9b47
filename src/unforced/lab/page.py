"""The lab's page: controls, live curves and the gap, in the project's page shell (report/page.py). The behaviour
is in static/lab.js; the charts are uPlot, vendored under static/vendor/uplot (nothing is fetched at run time)."""

from __future__ import annotations

from unforced.lab.jobs import MODEL_SIZES
from unforced.report.page import page
from unforced.tasks import TASKS

LAB_STYLE = """<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css">
<style>.controls{display:flex;flex-wrap:wrap;gap:.6em 1.2em;align-items:center;margin:1em 0}
.controls label{display:flex;gap:.4em;align-items:center}button{padding:.3em 1em}
#gap{font-size:2em;font-weight:600}.figures{display:flex;gap:2em;align-items:baseline;flex-wrap:wrap}
#message{color:#a00;min-height:1.2em}
#heatmap td{font-size:.8em;padding:2px 4px;text-align:left}#heatmap td.gold{outline:2px solid #d62728}.presets button{margin-right:.4em}</style>"""


def _options(values, selected: str) -> str:
    return "".join(f'<option value="{value}"{" selected" if value == selected else ""}>{value}</option>'
                   for value in values)


def lab_page() -> str:
    """The whole lab page as HTML."""
    body = f"""<h1>unforced lab</h1>
<p>Two models of one task train side by side from the same start: one on cross-entropy (teacher forcing), one on
<code>(1 - w) * cross-entropy + w * SCST reward</code>. Scores are token accuracies on validation pairs:
teacher-forced (gold prefix) and free-running (the model's own greedy prefix). The gap is the cross-entropy
model's teacher-forced minus free-running accuracy. Until the slider first leaves 0 the reward-blended model
follows the cross-entropy one (its copy); then it fine-tunes from it at its own learning rate.</p>
<div class="controls">
 <label>task <select id="task">{_options(TASKS, "toy-translation")}</select></label>
 <label>model <select id="model">{_options(MODEL_SIZES, "small")}</select></label>
 <label>strategy <select id="strategy"><option value="reinforce">SCST (reinforce)</option></select></label>
 <label>steps <input id="steps" type="number" min="1" max="100000" value="300" style="width:6em"></label>
 <label>seed <input id="seed" type="number" min="0" value="0" style="width:5em"></label>
</div>
<div class="controls">
 <label>cross-entropy <input id="reward-weight" type="range" min="0" max="1" step="0.05" value="0.5"> reward</label>
 <span>w = <output id="weight-value">0.50</output></span>
 <button id="train">Train</button> <button id="pause" disabled>Pause</button> <button id="reset">Reset</button>
</div>
<div class="controls presets">presets:
 <button data-preset="0">pure cross-entropy (w = 0)</button>
 <button data-preset="0.5">blend (w = 0.5)</button>
 <button data-preset="0.9">mostly reward (w = 0.9)</button>
</div>
<div id="message" role="status"></div>
<div class="figures">
 <div>exposure-bias gap: <span id="gap">-</span></div>
 <div>step <span id="step">0</span> / <span id="total">-</span></div>
 <div><span id="speed">-</span> steps/s</div>
 <div>ETA <span id="eta">-</span></div>
 <div>state <span id="state">idle</span></div>
</div>
<div id="scores-chart"></div>
<p>The task's own sequence metric, free-running (<span id="metric-name">-</span>): the reward the reward-blended
model is trained on. Token accuracy is positional, so one early slip costs every later token; the metric is not.</p>
<div id="metric-chart"></div>
<div id="gap-chart"></div>
<div id="schedule-chart"></div>
<h2>What the model believes along its own decode</h2>
<p>One validation example decoded greedily, the model fed its own tokens. Each column is a position; each cell a
candidate next token, shaded by its probability; the gold token is outlined, and the last row gives its
probability. <label>model <select id="beliefs-model"><option value="teacher_forcing">cross-entropy</option>
<option value="reinforce">reward-blended</option></select></label></p>
<p id="beliefs-source"></p>
<div id="heatmap" style="overflow-x:auto"></div>
<h2>Recovery: edit one token of the gold prefix</h2>
<div class="controls">
 <label>position <input id="recovery-position" type="number" min="1" value="2" style="width:4em"></label>
 <label>token <input id="recovery-token" type="text" value="los" style="width:8em"></label>
 <button id="recover">Edit and continue</button>
</div>
<div id="recovery"></div>
<div class="controls">
 <label>finished runs <select id="runs"></select></label> <button id="open-run">Replay</button>
</div>
<script src="/static/vendor/uplot/uPlot.iife.min.js"></script>
<script src="/static/lab.js"></script>"""
    return page("unforced lab", body, extra_head=LAB_STYLE)


__all__ = ["lab_page"]
