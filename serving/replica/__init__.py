"""The inference replica: one process per booked device that loads models on demand into an LRU
cache within a memory budget, batches requests per model and answers signed HTTP requests.

It imports nothing of the project but `serving.signing` (no Django): the node supervisor starts it
as `python -m serving.replica <config.json>` with CUDA_VISIBLE_DEVICES set to the one booked device.
"""
