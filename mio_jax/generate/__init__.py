"""Sampling from a trained model: KV-cache decoding, modality constraints, CFG, beam search.

    from mio_jax.generate.api import generate
    from mio_jax.generate.sampling import mio_sampling
    from mio_jax.generate.segments import split_segments

    outs = generate(params, config, vocab, [prompt_ids], max_new_tokens=64, output_modality="image",
                    sampling=mio_sampling(), cfg_scale=3.0, rng=jax.random.PRNGKey(0))
    segments = split_segments(outs[0], vocab)   # text ids / image codes [N] / speech codes [L, n]

CLI: `python -m mio_jax.generate ...` (mio_jax/cli/generate.py).
"""
