"""Train the embedded default model (a tiny Pi0) on the tabletop task, on a CPU.

Run::

    python -m flowlens.tasks.tabletop.train --out runs/tabletop            # train, evaluate
    python -m flowlens.tasks.tabletop.train --out runs/tabletop --ship     # ... and ship the assets

What it does, deterministically from ``--seed``:

1. trains the task tokenizer (:mod:`flowlens.tasks.tabletop.tokenizer`);
2. renders ``--episodes`` expert episodes (training seeds ``0 … episodes-1``;
   held-out seeds start at :data:`~flowlens.tasks.tabletop.dataset.HELD_OUT_SEED`), several frames
   each, and computes openpi norm stats (mean, std, q01, q99; Pi0.5 uses the quantiles);
3. trains :class:`flowlens.model.pi0.Pi0Model` with openpi's flow-matching loss
   (``Pi0Model.compute_loss``: t ~ Beta(1.5, 1), x_t = t·noise + (1−t)·actions, target
   noise − actions), AdamW with warm-up and cosine decay, gradient clipping at 1 and an EMA of the
   weights; a tqdm bar shows progress, ``loss.csv`` and ``loss.png`` record the loss curve;
4. stops after ``--steps`` steps or ``--minutes`` minutes, whichever comes first, checkpointing
   every ``--save-every`` steps (``params.npz``, the EMA weights);
5. evaluates on held-out scenes (:mod:`flowlens.tasks.tabletop.evaluate`) and writes
   ``summary.json``; with ``--ship`` copies tokenizer, weights, config and norm stats to
   ``flowlens/assets/tabletop/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import time

import numpy as np

ASSET_DIR = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tabletop"


def config_to_dict(config) -> dict:
    """Pi0Config → JSON-able dict (nested configs as dicts, tuples as lists)."""
    d = dataclasses.asdict(config)
    d["cameras"] = list(d["cameras"])
    return d


def _plot_loss(csv_rows: list[tuple[int, float, float, float]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r[0] for r in csv_rows])
    loss = np.array([r[1] for r in csv_rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.6, alpha=0.4, label="loss (batch)")
    if len(loss) >= 20:
        k = max(5, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"moving mean ({k})")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("tabletop tiny Pi0")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def init_params(model, rng):
    """Random parameters for training from scratch: openpi's initialisers, except the token
    embedding, drawn with std ``1/sqrt(width)`` instead of flax's 0.01 so that embedded prompt
    tokens (``row * sqrt(width)``) start at unit scale like the image tokens; with 0.01 they start
    about 12x smaller than the image tokens and the prompt is drowned in the first layers.

    Pi0.5 only: openpi zero-initialises the adaRMS modulation (scale, shift, gate), so every
    gated residual branch of the action expert starts closed (gate 0) and the expert does
    nothing until the gates grow; here the gate biases start at 1 (an ordinary residual)."""
    import jax
    import jax.numpy as jnp

    params = model.init(rng)
    emb = params["PaliGemma"]["llm"]["embedder"]["input_embedding"]
    k = jax.random.fold_in(rng, 1)
    params["PaliGemma"]["llm"]["embedder"]["input_embedding"] = jax.random.normal(k, emb.shape, emb.dtype) / (
        emb.shape[1] ** 0.5
    )
    if model.config.pi05:
        llm = params["PaliGemma"]["llm"]
        w = model.config.action_expert.width
        for norm in (llm["layers"]["pre_attention_norm_1"], llm["layers"]["pre_ffw_norm_1"], llm["final_norm_1"]):
            bias = norm["Dense_0"]["bias"]
            norm["Dense_0"]["bias"] = bias.at[..., 2 * w :].set(jnp.ones_like(bias[..., 2 * w :]))
    return params


def build_samples(out: pathlib.Path, episodes: int, frames_per_episode: int, tokenizer, config):
    from flowlens.tasks.tabletop.dataset import Samples, make_samples

    cache = out / f"samples_{episodes}x{frames_per_episode}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as d:
            return Samples(**{k: d[k] for k in d.files})
    samples = make_samples(range(episodes), tokenizer, config, frames_per_episode=frames_per_episode, progress=True)
    np.savez(cache, **dataclasses.asdict(samples))
    return samples


def train(
    out: str | pathlib.Path,
    *,
    steps: int = 2000,
    minutes: float = 30.0,
    batch_size: int = 32,
    episodes: int = 4000,
    frames_per_episode: int = 6,
    lr: float = 1e-3,
    warmup: int = 100,
    ema: float = 0.99,
    seed: int = 0,
    save_every: int = 100,
    init: str | None = None,
    log_every: int = 1,
) -> dict:
    """Train and return a summary dict (also written to ``out/summary.json``).

    Args:
      out: output directory (samples cache, params.npz, loss.csv, loss.png, summary.json).
      steps: maximum optimizer steps (the cosine schedule spans them).
      minutes: wall-clock budget; training stops (and saves) when it is spent.
      batch_size: samples per step.
      episodes, frames_per_episode: training set size (seeds 0 … episodes-1).
      lr, warmup: peak learning rate and warm-up steps.
      ema: decay of the exponential moving average of the weights that is saved.
      seed: initialisation and batch-order seed.
      save_every: checkpoint interval in steps.
      init: continue from a params.npz instead of a random initialisation.
      log_every: loss rows written every this many steps.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm import tqdm

    from flowlens.model.norm_stats import save_norm_stats
    from flowlens.model.observation import Observation
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.tokenizer import PaligemmaTokenizer
    from flowlens.tasks.tabletop.config import tabletop_config
    from flowlens.tasks.tabletop.dataset import compute_norm_stats, model_batch
    from flowlens.tasks.tabletop.params_io import load_params_npz
    from flowlens.tasks.tabletop.tokenizer import train_tokenizer

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    proto = train_tokenizer()
    (out / "tokenizer.model").write_bytes(proto)
    config = tabletop_config()
    tokenizer = PaligemmaTokenizer.from_bytes(proto, max_len=config.max_token_len)
    if tokenizer.vocab_size != config.vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer.vocab_size} pieces, config expects {config.vocab_size}")
    samples = build_samples(out, episodes, frames_per_episode, tokenizer, config)
    stats = compute_norm_stats(samples)
    save_norm_stats(stats, out)
    (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
    data_seconds = time.time() - t_start
    print(f"{len(samples)} samples from {episodes} episodes in {data_seconds:.0f}s", flush=True)

    model = Pi0Model(config, image_head_zeroinit=False)
    key = jax.random.key(seed)
    key, k_init = jax.random.split(key)
    params = load_params_npz(init) if init else init_params(model, k_init)
    params = jax.tree.map(jnp.asarray, params)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr * 0.05)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=1e-4))
    opt_state = opt.init(params)
    ema_params = params
    cams = config.cameras

    def loss_fn(p, batch, rng):
        obs = Observation(
            images={c: batch["images"][:, i] for i, c in enumerate(cams)},
            image_masks={},
            state=batch["state"],
            tokenized_prompt=batch["tokens"],
            tokenized_prompt_mask=batch["token_mask"],
        )
        return jnp.mean(model.compute_loss(p, obs, batch["actions"], rng))

    @jax.jit
    def train_step(p, ema_p, o, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch, rng)
        updates, o = opt.update(grads, o, p)
        p = optax.apply_updates(p, updates)
        ema_p = jax.tree.map(lambda e, x: ema * e + (1 - ema) * x, ema_p, p)
        return p, ema_p, o, loss, optax.global_norm(grads)

    order_rng = np.random.default_rng(seed)
    perm, pos = order_rng.permutation(len(samples)), 0
    rows: list[tuple[int, float, float, float]] = []
    t0 = time.time()
    deadline = t0 + minutes * 60
    bar = tqdm(total=steps, desc="training", unit="step")
    step = 0
    for step in range(1, steps + 1):
        if pos + batch_size > len(perm):
            perm, pos = order_rng.permutation(len(samples)), 0
        idx = np.sort(perm[pos : pos + batch_size])
        pos += batch_size
        batch = {k: jnp.asarray(v) for k, v in model_batch(samples, idx, stats, config).items()}
        key, k_step = jax.random.split(key)
        params, ema_params, opt_state, loss, gnorm = train_step(params, ema_params, opt_state, batch, k_step)
        loss = float(loss)
        if step % log_every == 0:
            rows.append((step, loss, float(gnorm), time.time() - t0))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if step % save_every == 0 or time.time() > deadline:
            _save(out, ema_params, rows, step)
        if time.time() > deadline:
            print(f"time budget of {minutes} min spent at step {step}", flush=True)
            break
    bar.close()
    train_seconds = time.time() - t0
    _save(out, ema_params, rows, step)
    tail = [r[1] for r in rows[-50:]]
    summary = {
        "steps": step,
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "final_loss_mean50": float(np.mean(tail)) if tail else None,
        "first_loss": rows[0][1] if rows else None,
        "samples": len(samples),
        "episodes": episodes,
        "batch_size": batch_size,
        "lr": lr,
        "ema": ema,
        "seed": seed,
        "jax": jax.__version__,
        "optax": optax.__version__,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _save(out: pathlib.Path, params, rows, step: int) -> None:
    from flowlens.tasks.tabletop.params_io import save_params

    save_params(params, out / "params.npz")
    with open(out / "loss.csv", "w") as f:
        f.write("step,loss,grad_norm,seconds\n")
        for r in rows:
            f.write(f"{r[0]},{r[1]:.6f},{r[2]:.6f},{r[3]:.1f}\n")
    if rows:
        _plot_loss(rows, out / "loss.png")
    (out / "last_step.txt").write_text(str(step))


def ship(out: str | pathlib.Path, asset_dir: pathlib.Path = ASSET_DIR) -> dict[str, int]:
    """Copy the trained artefacts into the package assets; returns file → size in bytes."""
    out = pathlib.Path(out)
    asset_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in ("tokenizer.model", "params.npz", "config.json", "norm_stats.json", "summary.json"):
        src = out / name
        if src.is_file():
            dst = asset_dir / ("training.json" if name == "summary.json" else name)
            shutil.copyfile(src, dst)
            sizes[dst.name] = dst.stat().st_size
    return sizes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m flowlens.tasks.tabletop.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="flowlens_out/tabletop_train", help="output directory")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--episodes", type=int, default=4000)
    p.add_argument("--frames-per-episode", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--init", default=None, help="continue from this params.npz")
    p.add_argument("--eval-scenes", type=int, default=100, help="held-out scenes to evaluate (0: skip)")
    p.add_argument("--ship", action="store_true", help="copy the result into flowlens/assets/tabletop")
    a = p.parse_args(argv)
    summary = train(
        a.out,
        steps=a.steps,
        minutes=a.minutes,
        batch_size=a.batch_size,
        episodes=a.episodes,
        frames_per_episode=a.frames_per_episode,
        lr=a.lr,
        warmup=a.warmup,
        ema=a.ema,
        seed=a.seed,
        save_every=a.save_every,
        init=a.init,
    )
    if a.eval_scenes:
        from flowlens.tasks.tabletop.evaluate import evaluate_run

        summary["held_out"] = evaluate_run(a.out, num_scenes=a.eval_scenes)
        (pathlib.Path(a.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if a.ship:
        print("shipped:", ship(a.out))


if __name__ == "__main__":
    main()
