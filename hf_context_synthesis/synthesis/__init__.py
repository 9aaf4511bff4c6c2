"""Seeds -> rows: everything ``load_dataset("context_synthesis")`` runs (prompts, generation, cache, composition, output)."""
