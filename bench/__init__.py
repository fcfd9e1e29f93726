"""Benchmarks, each `python -m bench.NAME`: the prompt-tuning step (`train_step`), rank classification (`rank_eval`),
packed training on CPU and GPU (`packed`: its workload in `packed_cells`, its GPU suite in `packed_gpu`), the transfer
methods' steps (`methods`), a study's overhead (`study_overhead`), a worker's memory (`worker_memory`) and the task
cache (`task_cache`)."""
