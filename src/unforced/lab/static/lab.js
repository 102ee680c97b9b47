// The lab page: drives the HTTP API (POST/PATCH/DELETE /api/jobs, the event stream) and draws with uPlot.
// Its state (task, model, strategy, weight, seed, steps) lives in the URL, so a configuration can be shared.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const fields = ["task", "model", "strategy", "steps", "seed"];
  let jobId = null, source = null, paused = false, weightTimer = null;
  const empty = () => ({step: [], tf: [], fr: [], rfr: [], gap: [], metricFr: [], metricRfr: []});
  let points = empty();
  let beliefs = null;
  let schedule = {step: [], weight: []};  // w at every step: the slider's course, the schedule curve

  function width() { return Math.max(320, Math.min(1050, document.body.clientWidth - 20)); }
  const scoresChart = new uPlot({
    title: "validation token accuracy", width: width(), height: 300, scales: {x: {time: false}, y: {range: [0, 1]}},
    series: [{label: "step"},
             {label: "cross-entropy, teacher-forced", stroke: "#1f77b4", width: 2},
             {label: "cross-entropy, free-running", stroke: "#ff7f0e", width: 2},
             {label: "reward-blended, free-running", stroke: "#2ca02c", width: 2}]},
    [[], [], [], []], $("scores-chart"));
  // The task's own free-running sequence metric (BLEU on the toy translator): the reward SCST optimises, where
  // token accuracy above is positional (one early slip shifts every later token).
  const metricChart = new uPlot({
    title: "validation free-running sequence metric (the task's; SCST's reward)", width: width(), height: 250,
    scales: {x: {time: false}},
    series: [{label: "step"},
             {label: "cross-entropy, free-running", stroke: "#ff7f0e", width: 2},
             {label: "reward-blended, free-running", stroke: "#2ca02c", width: 2}]},
    [[], [], []], $("metric-chart"));
  const gapChart = new uPlot({
    title: "exposure-bias gap (teacher-forced - free-running accuracy)", width: width(), height: 200,
    scales: {x: {time: false}}, series: [{label: "step"}, {label: "gap", stroke: "#d62728", width: 2}]},
    [[], []], $("gap-chart"));
  const scheduleChart = new uPlot({
    title: "reward weight w at each step (0 = cross-entropy, 1 = reward)", width: width(), height: 150,
    scales: {x: {time: false}, y: {range: [0, 1]}}, series: [{label: "step"}, {label: "w", stroke: "#9467bd", width: 2}]},
    [[], []], $("schedule-chart"));

  function draw() {
    scoresChart.setData([points.step, points.tf, points.fr, points.rfr]);
    metricChart.setData([points.step, points.metricFr, points.metricRfr]);
    gapChart.setData([points.step, points.gap]);
    scheduleChart.setData([schedule.step, schedule.weight]);
    document.body.dataset.points = String(points.step.length);
  }
  function clear() {
    points = empty(); schedule = {step: [], weight: []};
    beliefs = null; drawBeliefs(); draw();
    $("gap").textContent = "-";
  }
  function say(text) { $("message").textContent = text || ""; }
  function setState(state) { $("state").textContent = state; document.body.dataset.state = state; }
  function fmt(value, digits) { return value === null || value === undefined ? "-" : Number(value).toFixed(digits); }

  function addPoint(event) {
    if (!event.evaluated) return;
    points.step.push(event.step); points.tf.push(event.tf_score); points.fr.push(event.fr_score);
    points.rfr.push(event.reward_fr_score); points.gap.push(event.gap);
    const metric = event.metric || {};
    points.metricFr.push(metric.fr ?? null); points.metricRfr.push(metric.reward_fr ?? null);
    if (metric.name) $("metric-name").textContent = metric.name;
    document.body.dataset.lastMetricFr = String(metric.fr);
    document.body.dataset.lastRewardMetricFr = String(metric.reward_fr);
    $("gap").textContent = fmt(event.gap, 3);
    document.body.dataset.lastTf = String(event.tf_score);
    document.body.dataset.lastFr = String(event.fr_score);
    document.body.dataset.lastRewardFr = String(event.reward_fr_score);
    if (event.beliefs) { beliefs = event.beliefs; drawBeliefs(); }
    draw();
  }

  function escape(text) {
    return String(text).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
  }
  // The heat map: rows are the candidates by rank, columns the positions of the model's own decode.
  function drawBeliefs() {
    const view = beliefs && beliefs[$("beliefs-model").value];
    if (!view) { $("heatmap").innerHTML = ""; $("beliefs-source").textContent = ""; return; }
    $("beliefs-source").textContent = "source: " + view.source + "  |  gold: " + view.gold.join(" ") +
      "  |  decoded: " + view.chosen.join(" ");
    let html = "<table><tr><th>position</th>" + view.gold.map((_, t) => "<th>" + (t + 1) + "</th>").join("") +
      "</tr><tr><th>gold</th>" + view.gold.map((word) => "<td>" + escape(word) + "</td>").join("") + "</tr>";
    for (let rank = 0; rank < view.top[0].length; rank++) {
      html += "<tr><th>#" + (rank + 1) + "</th>";
      view.top.forEach((row, t) => {
        const [word, p] = row[rank];
        const gold = word === view.gold[t] ? ' class="gold"' : "";
        html += "<td" + gold + ' style="background:rgba(31,119,180,' + p.toFixed(3) + ')" title="' +
          p.toFixed(3) + '">' + escape(word) + "</td>";
      });
      html += "</tr>";
    }
    html += "<tr><th>p(gold)</th>" + view.gold_probability.map((p) => "<td>" + p.toFixed(2) + "</td>").join("") +
      "</tr></table>";
    $("heatmap").innerHTML = html;
    document.body.dataset.heatmapColumns = String(view.top.length);
  }

  function handle(event) {
    if (event.type === "step") {
      if (event.step > 0 && typeof event.reward_weight === "number") {
        schedule.step.push(event.step); schedule.weight.push(event.reward_weight);
        document.body.dataset.lastWeight = String(event.reward_weight);
        if (!event.evaluated) scheduleChart.setData([schedule.step, schedule.weight]);
      }
      addPoint(event);
      $("step").textContent = event.step; $("total").textContent = event.steps;
      $("speed").textContent = fmt(event.steps_per_second, 2);
      $("eta").textContent = event.eta_seconds === null ? "-" : fmt(event.eta_seconds, 0) + " s";
      document.body.dataset.step = String(event.step);
      document.body.dataset.rewardFromStep = String(event.reward_from_step);
      if (!paused) setState("running");
    } else if (event.type === "paused") {  // the worker has stopped between two steps
      setState("paused"); document.body.dataset.pausedAt = String(event.step);
    } else if (["done", "stopped", "error"].includes(event.type)) {
      setState(event.type);
      if (event.type === "error") say(event.message);
      if (event.type === "done") say("finished: run directory " + event.run_dir);
      if (source) { source.close(); source = null; }
      $("pause").disabled = true;
      loadRuns();
    }
  }

  // ---- the URL holds the configuration --------------------------------------------------------------------
  function fromUrl() {
    const query = new URLSearchParams(location.search);
    for (const name of fields) if (query.has(name)) $(name).value = query.get(name);
    if (query.has("w")) $("reward-weight").value = query.get("w");
    showWeight();
  }
  function toUrl() {
    const query = new URLSearchParams();
    for (const name of fields) query.set(name, $(name).value);
    query.set("w", $("reward-weight").value);
    history.replaceState(null, "", "?" + query.toString());
  }
  function weight() { return Number($("reward-weight").value); }
  function showWeight() { $("weight-value").textContent = weight().toFixed(2); }

  async function call(method, url, body) {
    const response = await fetch(url, {method, headers: {"Content-Type": "application/json"},
                                       body: body === undefined ? undefined : JSON.stringify(body)});
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || (response.status + " " + response.statusText));
    return data;
  }

  async function train() {
    say("");
    if (jobId) await reset();
    toUrl();
    const body = {task: $("task").value, model: $("model").value, strategy: $("strategy").value,
                  steps: Number($("steps").value), seed: Number($("seed").value), reward_weight: weight()};
    try {
      const job = await call("POST", "/api/jobs", body);
      jobId = job.id; paused = false; document.body.dataset.job = jobId;
      $("pause").disabled = false; $("pause").textContent = "Pause";
      clear(); setState("starting");
      source = new EventSource("/api/jobs/" + jobId + "/events");
      source.onmessage = (message) => handle(JSON.parse(message.data));
    } catch (error) { say(error.message); }
  }

  async function pause() {
    if (!jobId) return;
    try {
      await call("PATCH", "/api/jobs/" + jobId, {paused: !paused});
      paused = !paused;
      $("pause").textContent = paused ? "Resume" : "Pause";
      setState(paused ? "paused" : "running");
    } catch (error) { say(error.message); }
  }

  async function reset() {
    if (source) { source.close(); source = null; }
    if (jobId) { try { await call("DELETE", "/api/jobs/" + jobId); } catch (error) { say(error.message); } }
    jobId = null; paused = false; $("pause").disabled = true; $("pause").textContent = "Pause";
    clear(); setState("idle");
  }

  function weightChanged() {
    showWeight(); toUrl();
    clearTimeout(weightTimer);
    weightTimer = setTimeout(async () => {
      if (!jobId) return;
      try { await call("PATCH", "/api/jobs/" + jobId, {reward_weight: weight()}); } catch (error) { say(error.message); }
    }, 100);
  }

  // The recovery view: both models continue on their own after the edited prefix; gold matches are marked.
  async function recover() {
    if (!jobId) { say("press Train first: the recovery view asks the models being trained"); return; }
    try {
      const body = {position: Number($("recovery-position").value), token: $("recovery-token").value};
      const answer = await call("POST", "/api/jobs/" + jobId + "/recovery", body);
      const names = {teacher_forcing: "cross-entropy", reinforce: "reward-blended"};
      $("recovery").innerHTML = Object.entries(answer.recovery).map(([tag, view]) =>
        "<p><b>" + names[tag] + "</b>: " + escape(view.prefix.join(" ")) + " | " +
        view.continuation.map((word, i) => view.matches[i] ? escape(word) :
                              '<span style="color:#d62728">' + escape(word) + "</span>").join(" ") +
        " &mdash; " + (view.steps_to_recover === null ? "not back on gold" :
                       "back on gold after " + view.steps_to_recover + " step(s)") + "</p>").join("") +
        "<p>gold: " + escape(Object.values(answer.recovery)[0].gold.join(" ")) + "</p>";
      document.body.dataset.recovered = "1";
    } catch (error) { say(error.message); }
  }

  async function loadRuns() {
    try {
      const data = await call("GET", "/api/runs");
      $("runs").innerHTML = data.runs.map((name) => "<option>" + name + "</option>").join("");
    } catch (error) { say(error.message); }
  }
  async function replay() {
    const name = $("runs").value;
    if (!name) return;
    try {
      const run = await call("GET", "/api/runs/" + encodeURIComponent(name));
      clear(); run.points.forEach(addPoint); setState("replay");
    } catch (error) { say(error.message); }
  }

  $("train").addEventListener("click", train);
  $("pause").addEventListener("click", pause);
  $("reset").addEventListener("click", reset);
  $("reward-weight").addEventListener("input", weightChanged);
  $("open-run").addEventListener("click", replay);
  $("beliefs-model").addEventListener("change", drawBeliefs);
  $("recover").addEventListener("click", recover);
  for (const name of fields) $(name).addEventListener("change", toUrl);
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => { $("reward-weight").value = button.dataset.preset; weightChanged(); });
  }
  window.addEventListener("resize", () => {
    scoresChart.setSize({width: width(), height: 300}); metricChart.setSize({width: width(), height: 250});
    gapChart.setSize({width: width(), height: 200});
    scheduleChart.setSize({width: width(), height: 150});
  });
  fromUrl(); setState("idle"); draw(); loadRuns();
  document.body.dataset.ready = "1";
})();
