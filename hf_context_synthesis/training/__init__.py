"""Fine-tuning on synthesized rows: packing, truncation, balancing, attention paths and the TRL trainer."""
