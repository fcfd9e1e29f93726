"""Benchmarks, each `python -m bench.NAME`: the prompt-tuning step (`train_step`), rank classification (`rank_eval`),
packed training on CPU and GPU (`packed`: its workload in `packed_cells`, its GPU suite in `packed_gpu`), the transfer
methods' steps (`methods`), a study's overhead (`study_overhead`), a worker's memory (`worker_memory`), the task
cache (`task_cache`), spot's logits against PEFT's for an exported adapter (`peft_interop`) and `make plan`'s estimate
against measured studies (`plan_vs_measured`). Their JSON outputs (`--json`) are committed under `bench/results/`."""
