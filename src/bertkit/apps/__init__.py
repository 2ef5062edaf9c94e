"""Applications built on the encoder: sentence embeddings now; search, clustering and summaries later."""
