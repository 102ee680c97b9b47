"""Lab jobs: two models of one task trained side by side in the background, written as a normal run directory.

A job trains, from the same seed and batches, a cross-entropy model (teacher forcing) and a reward-blended model
(SCST, `reinforce`, with loss = (1 - w) CE + w RL and w the lab's `reward_weight`, which the user may change at
any step). Until that weight is first raised above 0, the reward-blended model follows the cross-entropy model
exactly: after each of its steps it takes a copy of the cross-entropy model's weights and optimizer state, so when
the slider first leaves 0 the reward phase warm-starts from the cross-entropy model as trained so far (as the
`recommended` chain warm-starts SCST; SCST from scratch does not learn), and from then on trains at its own
`reward_learning_rate` (a fine-tune's rate: at the cross-entropy rate pure reward wrecks the model it starts from,
docs/lab.md). A job started above 0 blends from its first step, at `learning_rate`. Each model has its own
Trainer, in its own thread; the two threads take strict turns, one optimizer step each (`Lockstep`), so the global
random generator is drawn in one fixed order and a job replays exactly.
After each round (one step of both) an event is published; every `eval_every` rounds (and before the first)
both models are evaluated on validation pairs (`diagnostics.evaluate`) and the event carries:

    tf_score         teacher-forced token accuracy of the cross-entropy model
    fr_score         free-running (greedy) token accuracy of the cross-entropy model
    reward_fr_score  free-running token accuracy of the reward-blended model
    gap              tf_score - fr_score (the cross-entropy model's exposure-bias gap, in accuracy)

Token accuracy is the score because it exists under both decodings (there is no teacher-forced sequence metric,
docs/measures.md); each evaluated event carries the task's free-running metric of both models too (`metric`: name,
fr, reward_fr), the reward SCST optimises, which the page draws in a chart of its own.

The run directory (runfiles) holds config.yaml, tokenizers.json, metrics.jsonl (both Trainers' lines, tagged
`teacher_forcing` and `reinforce`, and the lab's validation lines), checkpoints/<tag>/last.pt and, once the job
has finished, results.json with the test figures: `unforced report` and `unforced gap` read it like any run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
import uuid
from pathlib import Path

import torch
import yaml

from unforced.diagnostics import evaluate
from unforced.errors import UnforcedError
from unforced.experiment import TEST_BEAM_SIZE, results_signature, signature
from unforced.lab.beliefs import free_running_beliefs, recovery_view
from unforced.lab.job import Job, JobSettings, Stopped
from unforced.models import ModelConfig, build_model
from unforced.runfiles import append_metrics, atomic_write_text, claim_run_directory
from unforced.strategies import make_strategy
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer

# Model sizes offered by the lab (GRU encoder-decoder with attention): small enough to train live on a laptop CPU.
MODEL_SIZES: dict[str, dict] = {
    "tiny": {"kind": "gru", "embedding": 32, "hidden": 64, "dropout": 0.0},
    "small": {"kind": "gru", "embedding": 48, "hidden": 96, "dropout": 0.0},
    "medium": {"kind": "gru", "embedding": 96, "hidden": 192, "dropout": 0.1},
}
# Task options the lab builds each task with (the toy translator at the quick preset's size).
TASK_OPTIONS: dict[str, dict] = {"toy-translation": {"size": 3000}}
# SCST as the reward side: temperature 0.5 as the presets use (samples at temperature 1 rarely beat the greedy
# baseline, run_config.py), 4 samples per source.
REWARD_OPTIONS = {"temperature": 0.5, "samples": 4}
CROSS_ENTROPY_TAG, REWARD_TAG = "teacher_forcing", "reinforce"
# Torch threads of the lab's process (set by `unforced lab`, cli.py; torch's setting is process-wide, so the worker
# leaves it to the process that owns it): every figure of a job depends on the float reduction order, hence on the
# thread count, so it is fixed, and a job replays bit for bit on any machine. Tiny models gain nothing from more.
LAB_THREADS = 1


def warm_up() -> None:
    """Pay a process's one-time lazy imports before the first job needs them: building the first torch optimizer
    imports torch._dynamo (through torch._compile's disable wrapper; with sympy, some 800 modules and 1.5 s on
    2 cores), which otherwise lands inside the first training step of the first job, and the first evaluation
    imports sacrebleu (the toy translator's BLEU, per sentence for SCST's reward and per corpus for the metric).
    The lab's server runs it at start, before uvicorn opens its port (app.py's lifespan), so no Train press comes
    before it."""
    from unforced.rewards import corpus_bleu, sentence_bleu

    sentence_bleu(["a b"], [["a b"]])
    corpus_bleu(["a b"], [["a b"]])
    torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())


def scores(cross_entropy: dict, reward: dict) -> dict:
    """The four scores of an event from the validation figures of both models."""
    return {"tf_score": cross_entropy["tf_token_acc"], "fr_score": cross_entropy["fr_token_acc"],
            "reward_fr_score": reward["fr_token_acc"],
            "gap": cross_entropy["tf_token_acc"] - cross_entropy["fr_token_acc"],
            "metric": {"name": cross_entropy["metric"]["name"], "fr": cross_entropy["metric"]["fr"],
                       "reward_fr": reward["metric"]["fr"]}}


def replay(metrics: list[dict]) -> list[dict]:
    """The evaluated step events of a run, rebuilt from its metrics.jsonl validation lines (a finished job's curves
    replayed): one per step at which both models were evaluated."""
    evaluations: dict[int, dict[str, dict]] = {}
    for record in metrics:
        if isinstance(record.get("eval"), dict) and record.get("strategy") in (CROSS_ENTROPY_TAG, REWARD_TAG):
            evaluations.setdefault(int(record["step"]), {})[record["strategy"]] = record["eval"]
    return [{"type": "step", "step": step, "evaluated": True,
             **scores(figures[CROSS_ENTROPY_TAG], figures[REWARD_TAG])}
            for step, figures in sorted(evaluations.items()) if len(figures) == 2]


VALIDATION_KEYS = ("tf_nll", "fr_nll", "gap_pct", "tf_token_acc", "fr_token_acc", "metric")


def run_job(job: Job) -> None:
    """The worker: build the task and both models, train them in lockstep, publish events, write the run."""
    settings = job.settings
    try:
        task_options = TASK_OPTIONS.get(settings.task, {})
        task = get_task(settings.task, **{"seed": settings.seed, **task_options})
        longest_source, longest_target = task.longest()
        model_options = {**MODEL_SIZES[settings.model], "max_source_len": longest_source,
                         "max_target_len": longest_target, "target_vocab": task.target_tokenizer.vocab_size}
        for key, value in task.source_codec.model_options().items():
            model_options.setdefault(key, value)
        model_config = ModelConfig(**model_options)
        limits = {"max_source_len": model_config.max_source_len, "max_target_len": model_config.max_target_len}
        train_config = TrainConfig(steps=settings.steps, batch_size=settings.batch_size,
                                   learning_rate=settings.learning_rate, warmup=0, eval_every=0,
                                   checkpoint_every=max(settings.steps, 1), log_every=1, seed=settings.seed,
                                   device="cpu", eval_limit=settings.eval_limit)
        # The reward-blended model's own copy: its learning rate becomes `reward_learning_rate` at the warm start.
        train_configs = {CROSS_ENTROPY_TAG: train_config, REWARD_TAG: dataclasses.replace(train_config)}
        strategies = {CROSS_ENTROPY_TAG: make_strategy("teacher_forcing", {}, seed=settings.seed),
                      REWARD_TAG: make_strategy(settings.strategy,
                                                {**REWARD_OPTIONS, "rl_weight": job.reward_weight},
                                                seed=settings.seed).bind(task)}
        models = {}
        for tag in strategies:  # the same initial weights for both
            torch.manual_seed(settings.seed)
            models[tag] = build_model(model_config)
        out = job.run_dir
        resolved = {"task": settings.task, "task_options": task_options, "strategies": list(strategies),
                    "strategy_options": {CROSS_ENTROPY_TAG: {}, REWARD_TAG: REWARD_OPTIONS},
                    "model": dataclasses.asdict(model_config), "train": dataclasses.asdict(train_config),
                    "seed": settings.seed, "test_limit": settings.test_limit, "lab": dataclasses.asdict(settings),
                    "signature": signature(train_config)}
        claim_run_directory(out, resolved, resume=False, overwrite=False,
                            sections={"model": ModelConfig, "train": TrainConfig})
        atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), out / "config.yaml")
        atomic_write_text(json.dumps({"source": task.source_tokenizer.to_json() if task.source_tokenizer
                                      else None, "target": task.target_tokenizer.to_json()}),
                          out / "tokenizers.json")
        metrics_path = out / "metrics.jsonl"
        last_scores: dict = {}
        records: dict[str, dict] = {}
        trainers: dict[str, Trainer] = {}
        # The step after which the reward-blended model stopped following the cross-entropy model (0: it never
        # followed, the weight was above 0 from the start; None: it still follows).
        warm = {"from_step": 0 if strategies[REWARD_TAG].config.rl_weight > 0 else None}
        started = time.perf_counter()

        def validate(step: int) -> None:
            figures = {}
            for tag, model in models.items():
                full = evaluate(model, task, "valid", limit=settings.eval_limit, limits=limits)
                figures[tag] = {key: full[key] for key in VALIDATION_KEYS}
                append_metrics(metrics_path, {"strategy": tag, "step": step, "eval": figures[tag],
                                              "global_step": step, "source": "lab"})
            last_scores.update(scores(figures[CROSS_ENTROPY_TAG], figures[REWARD_TAG]))
            # The heat map: what each model believes along its own decode of the first validation example.
            last_scores["beliefs"] = {tag: free_running_beliefs(model, task, task.valid[0], limits)
                                      for tag, model in models.items()}

        def answer_questions() -> None:
            while job.questions:
                with job.condition:
                    question = job.questions.pop(0)
                try:
                    question.result = {tag: recovery_view(model, task, task.valid[0], limits, question.position,
                                                          question.token) for tag, model in models.items()}
                except UnforcedError as error:
                    question.error = str(error)
                question.answered.set()

        def round_done(step: int) -> None:
            """After both models took step `step` (0: before training): evaluate when due, publish, pause."""
            evaluated = step == 0 or step % settings.eval_every == 0 or step == settings.steps
            if evaluated:
                validate(step)
            record = records.get(REWARD_TAG, {})
            elapsed = time.perf_counter() - started
            speed = step / max(elapsed, 1e-9)  # rounds (one step of both models) a second, evaluations included
            shown = last_scores if evaluated else {k: v for k, v in last_scores.items() if k != "beliefs"}
            job.publish({"type": "step", "step": step, "steps": settings.steps, "evaluated": evaluated,
                         **shown, "reward_weight": strategies[REWARD_TAG].config.rl_weight,
                         "reward_from_step": warm["from_step"],
                         "loss": records.get(CROSS_ENTROPY_TAG, {}).get("loss"), "reward_loss": record.get("loss"),
                         "steps_per_second": speed,
                         "eta_seconds": (settings.steps - step) / speed if step else None,
                         "elapsed_seconds": elapsed})
            answer_questions()
            with job.condition:
                if job.paused and job.live:
                    job.publish({"type": "paused", "step": step})
                while True:  # paused: the recovery view still answers
                    job.condition.wait_for(lambda: not job.paused or not job.live or bool(job.questions))
                    if not job.questions or not job.live:
                        break
                    answer_questions()
            if not job.live:
                raise Stopped
            # The slider's value takes effect at the reward-blended model's next step.
            strategies[REWARD_TAG].config.rl_weight = job.reward_weight
            if warm["from_step"] is None and job.reward_weight > 0:
                warm["from_step"] = step  # the reward phase starts from the cross-entropy model of this step
                if step > 0:  # a fine-tune's rate; before the first step there is nothing to fine-tune
                    train_configs[REWARD_TAG].learning_rate = settings.reward_learning_rate

        def follow() -> None:
            """Until the weight first leaves 0: the reward-blended model becomes the cross-entropy model again
            (weights and AdamW state, deep-copied so the two optimizers never share a tensor)."""
            models[REWARD_TAG].load_state_dict(models[CROSS_ENTROPY_TAG].state_dict())
            trainers[REWARD_TAG].optimizer.load_state_dict(
                copy.deepcopy(trainers[CROSS_ENTROPY_TAG].optimizer.state_dict()))

        def train(party: int, tag: str) -> None:
            def progress(record: dict) -> None:
                records[tag] = record
                if party == 1:
                    if warm["from_step"] is None:
                        follow()
                    round_done(record["step"])
                job.lockstep.hand_over(party)
                job.lockstep.wait_for(party)

            identity = {"model_config": dataclasses.asdict(model_config), "strategy": tag, "task": task.name}
            trainer = Trainer(models[tag], task, strategies[tag], train_configs[tag], out / "checkpoints" / tag,
                              metrics_path, tag=tag, identity=identity, limits=limits, progress=progress)
            trainers[tag] = trainer
            try:
                job.lockstep.wait_for(party)
                summaries[tag] = trainer.fit()
            except Stopped:
                pass
            except BaseException as error:  # noqa: BLE001  (the other thread must not wait for ever)
                failures.append(error)
                job.lockstep.stop()
            finally:
                job.lockstep.hand_over(party, finished=True)

        summaries: dict[str, dict] = {}
        failures: list[BaseException] = []
        with job.condition:
            if job.state == "starting":
                job.state = "paused" if job.paused else "running"
        round_done(0)
        threads = [threading.Thread(target=train, args=(party, tag), name=f"lab-{job.id}-{tag}", daemon=True)
                   for party, tag in enumerate(strategies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        if not job.live:
            raise Stopped
        write_results(job, task, models, summaries, limits, resolved["signature"], warm["from_step"])
        job.state = "done"
        job.publish({"type": "done", "step": settings.steps, "run_dir": out.name})
    except Stopped:
        job.publish({"type": "stopped"})
    except UnforcedError as error:
        job.error, job.state = str(error), "error"
        job.publish({"type": "error", "message": str(error)})
    except Exception as error:  # noqa: BLE001  (a bug: the page says so; the server keeps serving)
        job.error, job.state = f"internal error: {type(error).__name__}: {error}", "error"
        job.publish({"type": "error", "message": job.error})
        raise
    finally:
        job.drop_questions("the job is no longer training")


def write_results(job: Job, task, models: dict, summaries: dict, limits: dict, base_signature: dict,
                  reward_from_step: int | None = 0) -> None:
    """results.json of the finished job: each model's test figures (the results contract). `reward_from_step`:
    the step of the cross-entropy model the reward-blended one warm-started from (0: none; None: the weight never
    left 0, so the two are one model)."""
    settings = job.settings
    results = {"task": task.name, "seed": settings.seed, "task_settings": task.settings,
               "signature": base_signature, "strategies": {},
               "lab": {"reward_weight": job.reward_weight, "reward_from_step": reward_from_step}}
    for tag, model in models.items():
        figures = evaluate(model, task, "test", limit=settings.test_limit, limits=limits,
                           beam_size=TEST_BEAM_SIZE)
        figures["train_seconds"] = summaries.get(tag, {}).get("train_seconds", 0.0)
        figures["checkpoint"] = f"checkpoints/{tag}/last.pt"
        figures["warm_start_from"] = None
        results["strategies"][tag] = figures
        results["signature"] = results_signature(base_signature, task, figures["metric"], [settings.seed])
    atomic_write_text(json.dumps(results, indent=1), job.run_dir / "results.json")


class JobLimitError(UnforcedError):
    """Too many jobs at once, or a second one for one browser session."""


class Jobs:
    """The lab's jobs: at most `max_jobs` live at once, each run written under `runs_root`."""

    def __init__(self, runs_root: Path, max_jobs: int = 2, keep_finished: int = 16):
        self.runs_root = Path(runs_root)
        self.max_jobs = max_jobs
        self.keep_finished = keep_finished
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def start(self, settings: JobSettings, session: str | None = None) -> Job:
        with self.lock:
            live = [job for job in self.jobs.values() if job.live]
            if session is not None and any(job.session == session for job in live):
                raise JobLimitError("this browser session already has a training job: reset it first")
            if len(live) >= self.max_jobs:
                raise JobLimitError(f"too many jobs: at most {self.max_jobs} train at once; reset one first")
            finished = [job for job in self.jobs.values() if not job.live]
            for old in sorted(finished, key=lambda job: job.created)[:max(0, len(finished) - self.keep_finished)]:
                del self.jobs[old.id]
            job_id = uuid.uuid4().hex[:12]
            job = Job(id=job_id, settings=settings, run_dir=self.runs_root / f"lab-{job_id}", session=session,
                      reward_weight=settings.reward_weight)
            self.jobs[job_id] = job
        job.thread = threading.Thread(target=run_job, args=(job,), name=f"lab-{job_id}", daemon=True)
        job.thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def remove(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.pop(job_id, None)
        if job is not None:
            job.stop()
        return job

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every job and wait for the workers (clean shutdown)."""
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.stop()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout)


__all__ = ["LAB_THREADS", "MODEL_SIZES", "TASK_OPTIONS", "JobLimitError", "Jobs", "replay", "run_job", "scores",
           "warm_up", "write_results"]
