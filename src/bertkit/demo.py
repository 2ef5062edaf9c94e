"""`make demo`: real all-MiniLM-L6-v2 weights through bertkit's own loader, tokenizer and encoder; English
sentences in, the cosine-similarity matrix of their sentence vectors out."""

from __future__ import annotations

import sys
import time

from bertkit.apps.embeddings import embed
from bertkit.checkpoint import packaged_model_dir
from bertkit.model import BertModel
from bertkit.tokenizer import Tokenizer

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar on stage.",
    "The new movie is awesome.",
    "The film was fantastic, I loved it.",
    "The stock market fell sharply today.",
    "Shares dropped steeply in today's trading.",
]


def main(argv: list[str] | None = None) -> int:
    directory = packaged_model_dir()
    start = time.perf_counter()
    model, tokenizer = BertModel.from_pretrained(directory), Tokenizer.from_pretrained(directory)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded all-MiniLM-L6-v2 from {directory}\n  {model.config.num_hidden_layers} layers, hidden "
          f"{model.config.hidden_size}, {n_params / 1e6:.1f} M parameters, in {time.perf_counter() - start:.2f}s")
    print(f"  tokens of sentence 2: {tokenizer.encode(SENTENCES[1]).tokens}")
    start = time.perf_counter()
    vectors = embed(model, tokenizer, SENTENCES)
    ms = 1000 * (time.perf_counter() - start)
    sim = vectors @ vectors.T
    print(f"\nencoded {len(SENTENCES)} sentences in {ms:.0f} ms; cosine similarity of their mean-pooled vectors:\n")
    print("      " + "".join(f"{j:>7d}" for j in range(len(SENTENCES))))
    for i, row in enumerate(sim.tolist()):
        print(f"  [{i}] " + "".join(f"{v:7.3f}" for v in row) + f"   {SENTENCES[i]}")
    best = [(i, max((j for j in range(len(SENTENCES)) if j != i), key=lambda j: sim[i, j].item()))
            for i in range(len(SENTENCES))]
    print("\nnearest neighbour of each sentence:")
    for i, j in best:
        print(f"  {SENTENCES[i]!r:55} -> {SENTENCES[j]!r} ({sim[i, j].item():.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
