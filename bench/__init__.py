"""Benchmarks: prompt-tuning step time and memory (`bench.train_step`), rank classification
(`bench.rank_eval`)."""
