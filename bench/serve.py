"""Serving a prompt library: `Predictor.predict` against PEFT and one forward per row, and the server under load.

Run from the repository root:

    python -m bench.serve [--rows 256] [--naive-rows 32] [--json bench/results/serve.json]      # predict only
    python -m bench.serve --server [--duration 20] [--json bench/results/serve.json]           # and the server
    python -m bench.serve --url http://127.0.0.1:8000 --clients 1,8 --rows 64                  # a running server
    python -m bench.serve --model tiny-llama --rows 16 --naive-rows 4 --repeats 1              # a smoke run

Prompts: a library's entries for the model (`--library PATH`), or by default `--prompts` (8) sampled-vocabulary
prompts of length `--prompt-length` spread over `--tasks` (classification tasks of short inputs), written as spot
prompt files (their values do not change the timings). Rows: validation rows of the entries' tasks from the offline
mirror, each naming its entry, labels dropped, the tasks interleaved; rows over `--max-input-tokens` are left out
(the server refuses them). Entries of generation tasks and of mixtures get no rows: the baselines rank labels.

predict (one process, the same rows, batch size and torch threads; `--repeats` rounds, the order rotating, medians):
    spot        `Predictor.predict` (pipelines.predict's `predict_all`): mixed-task batches on each prompt's cached
                keys/values, labels as a prefix tree; a fresh predictor's first pass (cold prompt cache), then its
                second (warm)
    PEFT        one PeftModel (a second copy of the backbone) holding a prompt-tuning adapter per entry: rows grouped
                by entry, `set_adapter`, batches of `--batch-size` rows, each row once per label (input + label
                tokens, right-padded: PEFT ignores position ids) in one forward, the label tokens' log-probs summed,
                as lm-evaluation-harness ranks labels; only the label positions' logits are computed
                (`logits_to_keep`), the most a careful PEFT user would do
    naive       `label_scores_naive`: the prompt prepended (`prompt_once=False`), one full forward per row and
                label, one row at a time, on the first `--naive-rows` rows
Agreement: the fraction of rows whose label equals spot's. Target: spot (warm) >= 3x PEFT's rows/s.

server (`--server`: `pipelines.serve.start(cfg)` in-process, its config composed from conf/serve.yaml; or `--url`):
C closed-loop clients on the loopback address (threads, one `requests.Session` each), each sending one-row
requests of mixed tasks and waiting for the answer before the next, for `--duration` seconds (or `--requests` in
all) at each C of `--clients`, after an untimed warm-up. p50/p99 latency of the answered requests, rows/s, errors.
Target: p99 <= 3x p50 at every C.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipelines.paths import REPO, resolve_data_dir
from pipelines.predict import predict_all
from spot_core.backbones import Backbone, load_backbone
from spot_core.encoding import Codec, pad
from spot_core.library import Library
from spot_core.prompt_files import save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab
from spot_core.scoring import label_scores_naive
from spot_core.serving import Predictor, PromptSet, Request, RequestError
from spot_core.tasks import DataSource, Task, get, read_rows
from spot_core.tasks.definitions import register_definitions
from spot_core.tasks.inputs import task_inputs
from spot_core.tasks.loading import sample_rows
from spot_core.tasks.rows import RowError

TARGET_SPEEDUP, TARGET_TAIL = 3.0, 3.0  # predict >= 3x PEFT's rows/s; the server's p99 <= 3x its p50
TASKS = "sst2_v1,cola_v1,mnli_v1,qqp_v1,mrpc_v1,qnli_v1"  # rank classification, inputs of 13-63 tokens (median)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="a decoder-only backbone for load_backbone")
    p.add_argument("--library", help="a spot prompt library: its entries for --model (default: prompts made here)")
    p.add_argument("--tasks", default=TASKS, help="tasks of the prompts made here, comma-separated")
    p.add_argument("--prompts", type=int, default=8, help="prompts made here, spread over --tasks")
    p.add_argument("--prompt-length", type=int, default=100)
    p.add_argument("--rows", type=int, default=256, help="mixed-task rows that every method answers")
    p.add_argument("--naive-rows", type=int, default=32, help="the first rows, answered one forward per label too")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-input-tokens", type=int, default=128, help="the model's limit (conf/model); longer rows out")
    p.add_argument("--cache-mb", type=int, default=256, help="the prompt cache's bound")
    p.add_argument("--data-dir", default=None, help="offline data mirror (default: as the pipelines resolve it)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of the predict methods (medians)")
    p.add_argument("--no-predict", action="store_true", help="skip the predict comparison")
    p.add_argument("--server", action="store_true", help="start pipelines.serve in-process and load it")
    p.add_argument("--url", help="load the server at this base URL instead (it serves the same prompts)")
    p.add_argument("--serve-override", action="append", default=[], help="extra Hydra override for conf/serve.yaml")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load at each number of clients")
    p.add_argument("--requests", type=int, default=None, help="requests in all at each number of clients instead")
    p.add_argument("--warmup-requests", type=int, default=16, help="untimed requests before the first load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def machine() -> dict:
    import peft
    import transformers

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


# --- prompts and rows -----------------------------------------------------------------------------------------------
def make_prompts(args: argparse.Namespace, backbone: Backbone, folder: Path) -> tuple[PromptSet, list[str]]:
    """The prompts served and the Hydra overrides that serve them: a library's, or `--prompts` files made here."""
    if args.library:
        library = Library.open(args.library)
        register_definitions({e.task: e.task_definition for e in library.entries if e.task_definition})
        prompts = PromptSet.from_library(library, args.model, backbone.hidden_size)
        if not len(prompts):
            raise SystemExit(f"{args.library} holds no prompt for {args.model}")
        return prompts, [f"library={args.library}"]
    tasks, gen = args.tasks.split(","), torch.Generator().manual_seed(args.seed)
    paths = []
    for i in range(args.prompts):
        prompt = sampled_vocab(backbone.embeddings.detach(), args.prompt_length, gen)
        path = folder / f"{tasks[i % len(tasks)]}_{i}.safetensors"
        paths.append(str(save_prompt(path, prompt, model=args.model, task=tasks[i % len(tasks)])))
    return PromptSet.from_files(paths, args.model, backbone.hidden_size), [f"prompts=[{','.join(paths)}]"]


def label_fields(task: Task, row: dict) -> set[str]:
    """The fields of a task's row that its input is not made of (its label, an index, ...): a client sends none."""
    reads = {name.split(".")[0] for name in task.reads}
    kept = {k: v for k, v in row.items() if k in reads}
    inputs, dropped = task_inputs(task, kept, "row"), set(row) - reads
    for key in list(kept):
        rest = {k: v for k, v in kept.items() if k != key}
        try:
            if task_inputs(task, rest, "row") == inputs:
                kept, dropped = rest, dropped | {key}
        except RowError:  # a field the input is made of
            continue
    return dropped


def request_rows(args: argparse.Namespace, prompts: PromptSet, codec: Codec) -> tuple[list[dict], list[Request]]:
    """`--rows` rows naming their entries, interleaved entry by entry, and their checked requests."""
    data_dir = resolve_data_dir(args.data_dir)
    tasks = {p.task: get(p.task) for p in prompts.prompts.values()}
    entries = [p for p in prompts.prompts.values() if isinstance(tasks[p.task], Task) and tasks[p.task].label_words]
    if not entries:
        raise SystemExit("no entry of a task with labels (not a mixture): the baselines rank labels")
    per_task: dict[str, list[dict]] = {}
    for name in {p.task for p in entries}:
        raw = list(sample_rows(read_rows(DataSource.of(tasks[name], data_dir), "validation"), 2 * args.rows))
        drop = label_fields(tasks[name], raw[0])
        per_task[name] = [{k: v for k, v in r.items() if k not in drop} for r in raw]
    queues: list[list[tuple[dict, Request]]] = []
    for p in entries:
        peers = [q.id for q in entries if q.task == p.task]  # a task's rows dealt out to its entries
        mine = per_task[p.task][peers.index(p.id) :: len(peers)]
        queue = []
        for row in mine:
            row = {"entry": p.id, **row}
            try:
                queue.append((row, prompts.request(row, codec, "row")))
            except RequestError:  # over --max-input-tokens
                continue
        queues.append(queue)
    mixed = [pair for group in itertools.zip_longest(*queues) for pair in group if pair is not None][: args.rows]
    if len(mixed) < args.rows:
        print(f"only {len(mixed)} rows within {args.max_input_tokens} tokens; using them")
    return [row for row, _ in mixed], [req for _, req in mixed]


# --- the three ways -------------------------------------------------------------------------------------------------
def peft_model(args: argparse.Namespace, prompts: PromptSet):
    """One PeftModel on a second copy of the backbone, a prompt-tuning adapter per entry holding its prompt."""
    from peft import PromptTuningConfig, get_peft_model

    model, names = None, {}
    for i, p in enumerate(prompts.prompts.values()):
        names[p.id] = name = f"entry_{i}"
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p.length)
        if model is None:
            model = get_peft_model(load_backbone(args.model).model, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
        with torch.no_grad():
            model.prompt_encoder[name].embedding.weight.copy_(p.prompt)
    return model.eval(), names


@torch.no_grad()
def peft_scores(model, length: int, inputs: list[list[int]], labels: list[list[int]], pad_id: int) -> torch.Tensor:
    """[B, K] summed label log-probs: each (input, label) one right-padded row, input + label[:-1] fed; the logits
    predicting the label's tokens sit at prompt length + input length - 1 onwards."""
    seqs = [(inp, lab) for inp in inputs for lab in labels]
    ids, mask = pad([inp + lab[:-1] for inp, lab in seqs], pad_id)
    width = max(len(lab) for lab in labels)
    target, target_mask = pad([lab for _, lab in seqs], pad_id)
    at = torch.tensor([[length + len(inp) - 1 + min(j, len(lab) - 1) for j in range(width)] for inp, lab in seqs])
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=at).logits  # [B*K, width, V]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, target[..., None]).squeeze(-1)
    return (lp * target_mask).sum(-1).view(len(inputs), len(labels))


def peft_predict(model, names: dict[str, str], requests: list[Request], codec: Codec, batch: int) -> list[str]:
    """Each request's label: rows grouped by entry, one adapter at a time, batches sorted by input length."""
    out: list[str] = [""] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.prompt.id, []).append(i)
    for entry, members in groups.items():
        model.set_adapter(names[entry])
        members.sort(key=lambda i: len(requests[i].input_ids))
        for start in range(0, len(members), batch):
            idx = members[start : start + batch]
            task, length = requests[idx[0]].task, requests[idx[0]].prompt.length
            labels = [codec.encode_target(w) for w in task.label_words]
            scores = peft_scores(model, length, [requests[i].input_ids for i in idx], labels, codec.pad_id)
            for i, k in zip(idx, scores.argmax(-1).tolist(), strict=True):
                out[i] = task.label_words[k]
    return out


def naive_predict(backbone: Backbone, requests: list[Request], codec: Codec) -> list[str]:
    """Each request's label from one full forward per label, the prompt prepended, one row at a time."""
    out = []
    for r in requests:
        model = PromptedLM(backbone, SoftPrompt(r.prompt.prompt), prompt_once=False).eval()
        scores = label_scores_naive(model, [r.input_ids], [codec.encode_target(w) for w in r.task.label_words])
        out.append(r.task.label_words[int(scores[0].argmax())])
    return out


def timed(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def agreement(ours: list[str], theirs: list[str]) -> float:
    return sum(a == b for a, b in zip(ours, theirs, strict=False)) / len(theirs)


def predict_suite(args: argparse.Namespace, backbone: Backbone, codec: Codec, prompts: PromptSet,
                  requests: list[Request]) -> dict:  # fmt: skip
    """The three ways on the same rows, `--repeats` rounds (order rotating), medians; agreement with spot."""
    peft, names = peft_model(args, prompts)
    naive_requests = requests[: args.naive_rows]
    times: dict[str, list[float]] = {"spot_cold": [], "spot_warm": [], "peft": [], "naive": []}
    labels: dict[str, list[str]] = {}
    hits: list[float] = []

    def spot() -> None:
        predictor = Predictor(backbone, codec, args.batch_size, args.cache_mb << 20)
        for name in ("spot_cold", "spot_warm"):
            before = (predictor.cache.stats.hits, predictor.cache.stats.misses)
            out, seconds = timed(lambda: [p.prediction for p in predict_all(predictor, requests, show=False)])
            times[name].append(seconds)
            labels["spot"] = out
            h, m = predictor.cache.stats.hits - before[0], predictor.cache.stats.misses - before[1]
            hits.append(h / (h + m) if h + m else 0.0)

    def baseline(name: str, fn: Callable[[], list[str]]) -> Callable[[], None]:
        def run() -> None:
            labels[name], seconds = timed(fn)
            times[name].append(seconds)

        return run

    methods = [
        spot,
        baseline("peft", lambda: peft_predict(peft, names, requests, codec, args.batch_size)),
        baseline("naive", lambda: naive_predict(backbone, naive_requests, codec)),
    ]
    # warm-up: every way once on a batch (allocator, thread pools), the prompt cache thrown away with its predictor
    warm = requests[: args.batch_size]
    predict_all(Predictor(backbone, codec, args.batch_size, args.cache_mb << 20), warm, show=False)
    peft_predict(peft, names, warm, codec, args.batch_size)
    naive_predict(backbone, warm[:1], codec)
    for round_ in range(max(args.repeats, 1)):
        shift = round_ % len(methods)
        for method in methods[shift:] + methods[:shift]:
            method()
    rate = {name: (len(naive_requests) if name == "naive" else len(requests)) / statistics.median(seconds)
            for name, seconds in times.items()}  # fmt: skip
    return {
        "rows": len(requests),
        "naive_rows": len(naive_requests),
        "entries": len({r.prompt.id for r in requests}),
        "tasks": sorted({r.task.name for r in requests}),
        "mean_input_tokens": sum(len(r.input_ids) for r in requests) / len(requests),
        "spot_cold_rows_per_s": rate["spot_cold"],
        "spot_warm_rows_per_s": rate["spot_warm"],
        "peft_rows_per_s": rate["peft"],
        "naive_rows_per_s": rate["naive"],
        "speedup_vs_peft": rate["spot_warm"] / rate["peft"],
        "speedup_vs_peft_cold": rate["spot_cold"] / rate["peft"],
        "speedup_vs_naive": rate["spot_warm"] / rate["naive"],
        "agreement_peft": agreement(labels["spot"], labels["peft"]),
        "agreement_naive": agreement(labels["spot"], labels["naive"]),
        "cache_hit_rate": statistics.mean(hits[1::2]),  # the warm passes'
        "cache_hit_rate_cold": statistics.mean(hits[0::2]),
        "rounds_s": times,
    }


# --- the server under load ------------------------------------------------------------------------------------------
def start_server(args: argparse.Namespace, overrides: list[str]) -> tuple[str, Callable[[], None], dict]:
    """The base URL to load, how to stop what was started and the server's settings: `--url`, or pipelines.serve
    started in-process on a free port (its own Ray, shut down by the stop)."""
    if args.url:
        return args.url.rstrip("/"), lambda: None, {"url": args.url}
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipelines import serve

    settings = {"model": args.model, "model.max_input_tokens": args.max_input_tokens, "batch_size": args.batch_size,
                "cache_mb": args.cache_mb, "serve.port": free_port()}  # fmt: skip
    overrides = [f"{k}={v}" for k, v in settings.items()] + overrides + args.serve_override
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("serve", overrides=overrides)
    url = serve.start(cfg).rstrip("/")
    info = {"url": url, "serve": OmegaConf.to_container(cfg.serve), "overrides": args.serve_override}
    return url, lambda: serve.stop(shutdown_ray=True), info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(session, url: str, row: dict) -> bool:
    """One one-row request; whether it came back answered."""
    try:
        r = session.post(f"{url}/predict", json={"rows": [row]}, timeout=120)
        return r.status_code == 200 and len(r.json()["predictions"]) == 1
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load(url: str, rows: list[dict], clients: int, duration: float, total: int | None) -> dict:
    """`clients` closed-loop clients for `duration` seconds (or `total` requests in all); latencies of the answered."""
    import requests as http

    deadline = time.perf_counter() + duration
    lock, sent = threading.Lock(), itertools.count()
    latencies: list[float] = []
    errors, ends = [0], []

    def client(c: int) -> None:
        session = http.Session()
        for k in itertools.count():
            n = next(sent)
            if (total is not None and n >= total) or (total is None and time.perf_counter() >= deadline):
                break
            t0 = time.perf_counter()
            ok = post(session, url, rows[(c + k * clients) % len(rows)])
            t1 = time.perf_counter()
            with lock:
                ends.append(t1)
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = (max(ends) if ends else time.perf_counter()) - start
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "mean_ms": float(ms.mean()) if len(ms) else float("nan"),
        "rows_per_s": len(ms) / wall if wall > 0 else 0.0,
        "requests": len(ms) + errors[0],
        "errors": errors[0],
        "seconds": wall,
    }


def server_suite(args: argparse.Namespace, rows: list[dict], overrides: list[str]) -> tuple[dict[str, dict], dict]:
    """Each number of clients' figures, and the server's settings."""
    import requests as http

    url, stop, info = start_server(args, overrides)
    try:
        session = http.Session()
        firsts: dict[str, dict] = {}
        for row in rows:
            firsts.setdefault(row["entry"], row)
        for row in [*firsts.values(), *rows[: args.warmup_requests]]:  # every entry's prompt cached, replicas warm
            post(session, url, row)
        clients = map(int, args.clients.split(","))
        return {str(c): load(url, rows, c, args.duration, args.requests) for c in clients}, info
    finally:
        stop()


# --- report ---------------------------------------------------------------------------------------------------------
def verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    return "met" if met else f"missed by {abs(value - target):.2f}"


def report_predict(p: dict) -> dict:
    print(f"predict: {p['rows']} rows of {p['entries']} entries ({', '.join(p['tasks'])}), mean "
          f"{p['mean_input_tokens']:.1f} input tokens; rows/s (medians of {len(p['rounds_s']['peft'])} rounds)\n"
          f"  spot cold {p['spot_cold_rows_per_s']:.1f}  spot warm {p['spot_warm_rows_per_s']:.1f}  "
          f"PEFT {p['peft_rows_per_s']:.1f}  naive {p['naive_rows_per_s']:.2f} (on {p['naive_rows']} rows)\n"
          f"  spot/PEFT {p['speedup_vs_peft']:.2f}x (cold {p['speedup_vs_peft_cold']:.2f}x)  "
          f"spot/naive {p['speedup_vs_naive']:.1f}x\n"
          f"  same label as spot: PEFT {p['agreement_peft']:.3f}  naive {p['agreement_naive']:.3f}; prompt cache hit "
          f"rate warm {p['cache_hit_rate']:.2f}, cold {p['cache_hit_rate_cold']:.2f}")  # fmt: skip
    x = p["speedup_vs_peft"]
    print(f"predict vs PEFT: {x:.1f}x (target >= {TARGET_SPEEDUP:.0f}x: {verdict(x, TARGET_SPEEDUP, True)})")
    return {"predict_vs_peft": {"value": x, "target": TARGET_SPEEDUP, "met": x >= TARGET_SPEEDUP}}


def report_server(s: dict[str, dict]) -> dict:
    ratios = {}
    for c, f in s.items():
        ratios[c] = f["p99_ms"] / f["p50_ms"] if f["p50_ms"] > 0 else float("nan")
        print(f"server, {c:>2} clients: p50 {f['p50_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms  {f['rows_per_s']:.1f} "
              f"rows/s  {f['requests']} requests, {f['errors']} errors; p99/p50 {ratios[c]:.2f} (target <= "
              f"{TARGET_TAIL:.0f}: {verdict(ratios[c], TARGET_TAIL, False)})")  # fmt: skip
    met = all(r <= TARGET_TAIL for r in ratios.values()) and not any(f["errors"] for f in s.values())
    return {"server_p99_over_p50": {"value": ratios, "target": TARGET_TAIL, "met": met}}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone = load_backbone(args.model)
    if backbone.is_encoder_decoder:
        raise SystemExit("bench.serve compares decoder-only backbones (PEFT's CAUSAL_LM prompt tuning)")
    codec = Codec(backbone.tokenizer, False, args.max_input_tokens, 16)  # as pipelines.predict.load_predictor
    out: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine()}
    out["settings"] = {k: v for k, v in vars(args).items() if k != "json"}
    with tempfile.TemporaryDirectory() as folder:
        prompts, overrides = make_prompts(args, backbone, Path(folder))
        rows, requests = request_rows(args, prompts, codec)
        threads = torch.get_num_threads()
        print(f"model {args.model}  {len(prompts)} prompts served  batch {args.batch_size}  threads {threads}")
        load_avg, cores = os.getloadavg()[0], os.cpu_count() or 1
        if load_avg > 0.5:  # torch's threads spin on busy cores: 2 threads ran 12x slower than 1 on a loaded 2-core box
            print(f"load average {load_avg:.1f} on {cores} cores: the timings need an otherwise idle machine")
        out["targets"] = {}
        if not args.no_predict:
            out["predict"] = predict_suite(args, backbone, codec, prompts, requests)
            out["targets"] |= report_predict(out["predict"])
        if args.server or args.url:
            out["server"], out["settings"]["server"] = server_suite(args, rows, overrides)
            out["targets"] |= report_server(out["server"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
