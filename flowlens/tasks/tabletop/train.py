"""Train the embedded default model (a tiny Pi0.5) on the tabletop task, on a CPU, in two stages.

Run::

    python -m flowlens.tasks.tabletop.train --out runs/tabletop            # train, evaluate
    python -m flowlens.tasks.tabletop.train --out runs/tabletop --ship     # ... and ship the assets

What it does, deterministically from ``--seed``:

1. trains the task tokenizer (:mod:`flowlens.tasks.tabletop.tokenizer`);
2. renders ``--episodes`` expert episodes (training seeds ``0 … episodes-1``;
   held-out seeds start at :data:`~flowlens.tasks.tabletop.dataset.HELD_OUT_SEED`), several frames
   each with per-patch labels of the named objects, and computes openpi norm stats (mean, std,
   q01, q99; Pi0.5 uses the quantiles);
3. **stage 1, pre-training** (the first ``--pretrain-steps``): real Pi0 starts from PaliGemma, a
   VLM already pre-trained to ground phrases such as "red bowl" in images (detection and
   referring segmentation). A model trained from scratch has no such prior, and flow matching
   alone does not find one in a CPU budget: with the action loss only, the tiny model ignored the
   prompt and headed for the named object at chance level after 2,400–4,000 steps. So the prefix
   (image encoder + PaliGemma expert) is first trained on two throw-away heads reading its
   final-normed outputs: a *referring-segmentation* head (per image patch: the share covered by
   the named source, the named target and the gripper; :func:`dataset.patch_labels`) and a
   *grounding* head (mean over prefix tokens → the named objects' offsets from the gripper and
   the gripper's pose; :func:`dataset.grounding_target`). The heads are not part of the model
   and are not shipped (``aux_heads.npz`` keeps them for ``--init``);
4. **stage 2**: openpi's flow-matching loss (``Pi0Model.compute_loss``: t ~ Beta(1.5, 1),
   x_t = t·noise + (1−t)·actions, target noise − actions) plus the two heads, for the
   remaining steps. AdamW with warm-up and one cosine decay over both stages, gradient clipping at
   1 and an EMA of the weights; a tqdm bar shows progress, ``loss.csv`` and ``loss.png`` record
   the three losses;
5. stops after ``--steps`` steps or ``--minutes`` minutes, whichever comes first, checkpointing
   every ``--save-every`` steps (``params.npz``, the EMA weights); ``--eval-every`` prints a quick
   held-out evaluation (and the segmentation head's hit rate) while it trains;
6. evaluates on held-out scenes (:mod:`flowlens.tasks.tabletop.evaluate`) and writes
   ``summary.json``; with ``--ship`` copies tokenizer, weights, config and norm stats to
   ``flowlens/assets/tabletop/``.

Initialisation: openpi's initialisers except the token embedding (unit scale after Gemma's
``sqrt(width)``), the Pi0.5 adaRMS gates (open) and the patch position embedding (2-D sin-cos);
see :func:`flowlens.tasks.tabletop.init.init_params`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import time

import numpy as np

STEPS = 10_000
PRETRAIN_STEPS = 3_000
ASSET_DIR = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tabletop"


def config_to_dict(config) -> dict:
    """Pi0Config → JSON-able dict (nested configs as dicts, tuples as lists)."""
    d = dataclasses.asdict(config)
    d["cameras"] = list(d["cameras"])
    return d


def _plot_loss(csv_rows: list[tuple], path: pathlib.Path, pretrain_steps: int = 0) -> None:
    """Moving means of the flow-matching loss and the two pre-training head losses; the stage
    boundary as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray([r[:4] for r in csv_rows], float)
    steps = data[:, 0]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    k = max(1, len(data) // 100)
    for col, label in ((1, "flow matching"), (2, "grounding head"), (3, "segmentation head")):
        y = data[:, col]
        if not np.any(y > 0):
            continue
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], np.maximum(smooth, 1e-6), lw=1.2, label=label)
    if 0 < pretrain_steps < steps[-1]:
        ax.axvline(pretrain_steps, color="0.4", ls="--", lw=0.8, label="stage 2 starts")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (moving mean of {k})")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("tabletop tiny Pi0.5: pre-training heads, then flow matching")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def batch_observation(batch: dict, cameras):
    """A training batch (images [B, C, S, S, 3], state, tokens, token_mask) → an Observation."""
    from flowlens.model.observation import Observation

    return Observation(
        images={c: batch["images"][:, i] for i, c in enumerate(cameras)},
        image_masks={},
        state=batch["state"],
        tokenized_prompt=batch["tokens"],
        tokenized_prompt_mask=batch["token_mask"],
    )


def build_samples(out: pathlib.Path, episodes: int, frames_per_episode: int, tokenizer, config, num_objects=None):
    from flowlens.tasks.tabletop.dataset import Samples, make_samples

    tag = "" if num_objects is None else f"_{num_objects}obj"
    cache = out / f"samples_v3_{episodes}x{frames_per_episode}{tag}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as d:
            return Samples(**{k: d[k] for k in d.files})
    samples = make_samples(
        range(episodes),
        tokenizer,
        config,
        frames_per_episode=frames_per_episode,
        num_objects=num_objects,
        progress=True,
    )
    np.savez(cache, **dataclasses.asdict(samples))
    return samples


def train(
    out: str | pathlib.Path,
    *,
    steps: int = STEPS,
    pretrain_steps: int = PRETRAIN_STEPS,
    minutes: float = 60.0,
    batch_size: int = 8,
    episodes: int = 6000,
    frames_per_episode: int = 5,
    lr: float = 1e-3,
    warmup: int = 100,
    ema: float = 0.99,
    seed: int = 0,
    save_every: int = 500,
    init: str | None = None,
    log_every: int = 1,
    num_objects: int | None = None,
    eval_every: int = 0,
    grounding: float = 1.0,
    segmentation: float = 1.0,
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
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.tokenizer import PaligemmaTokenizer
    from flowlens.tasks.tabletop.config import tabletop_config
    from flowlens.tasks.tabletop.dataset import compute_norm_stats, model_batch
    from flowlens.tasks.tabletop.init import init_params
    from flowlens.tasks.tabletop.params_io import load_params_npz
    from flowlens.tasks.tabletop.pretrain_heads import (
        SEG_CLASSES,
        head_losses,
        init_heads,
        load_heads,
        source_hit_rate,
    )
    from flowlens.tasks.tabletop.pretrain_heads import segmentation as segmentation_head
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
    samples = build_samples(out, episodes, frames_per_episode, tokenizer, config, num_objects)
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
    ema_params = params
    heads = load_heads(pathlib.Path(init).parent) if init else None
    heads = init_heads(k_init, config.paligemma.width) if heads is None else heads
    params = {"model": params, "aux": jax.tree.map(jnp.asarray, heads)}
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr * 0.05)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=1e-4))
    opt_state = opt.init(params)
    cams = config.cameras

    def loss_fn(p, batch, rng):
        obs = batch_observation(batch, cams)
        flow, prefix_out, prefix_mask = model.compute_loss(p["model"], obs, batch["actions"], rng, return_prefix=True)
        flow = jnp.mean(flow)
        if not (grounding or segmentation):
            return flow, (flow, jnp.float32(0), jnp.float32(0))
        aux, aux_seg = head_losses(p["aux"], prefix_out, prefix_mask, batch["goals"], batch["patch_labels"])
        return batch["flow_weight"] * flow + grounding * aux + segmentation * aux_seg, (flow, aux, aux_seg)

    @jax.jit
    def train_step(p, ema_p, o, batch, rng):
        (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, rng)
        updates, o = opt.update(grads, o, p)
        p = optax.apply_updates(p, updates)
        ema_p = jax.tree.map(lambda e, x: ema * e + (1 - ema) * x, ema_p, p["model"])
        return p, ema_p, o, losses, optax.tree.norm(grads)

    if eval_every:
        from flowlens.tasks.tabletop.evaluate import evaluate_policy, held_out_cases

        quick = {"held_out": held_out_cases(50), "train": held_out_cases(50, start=0)}
        eval_rows = []
        if segmentation:
            from flowlens.tasks.tabletop.dataset import HELD_OUT_SEED, make_samples

            probe = make_samples(range(HELD_OUT_SEED, HELD_OUT_SEED + 100), tokenizer, config, frames_per_episode=2)
            probe_batch = {
                k: jnp.asarray(v) for k, v in model_batch(probe, np.arange(len(probe)), stats, config).items()
            }

            @jax.jit
            def seg_predict(p, b):
                obs = batch_observation(b, cams)
                key0 = jax.random.key(0)
                _, prefix_out, _ = model.compute_loss(p["model"], obs, b["actions"], key0, return_prefix=True)
                return segmentation_head(p["aux"], prefix_out, probe.patch_labels[0].size // SEG_CLASSES)

    order_rng = np.random.default_rng(seed)
    perm, pos = order_rng.permutation(len(samples)), 0
    rows: list[tuple[int, float, float, float, float, float]] = []
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
        batch["goals"] = jnp.asarray(samples.goals[idx])
        batch["patch_labels"] = jnp.asarray(samples.patch_labels[idx])
        # stage 1 (pre-training, steps <= pretrain_steps): the grounding heads alone train the
        # prefix, as PaliGemma is pre-trained before Pi0 is; stage 2 adds the flow-matching loss
        batch["flow_weight"] = jnp.float32(0.0 if step <= pretrain_steps else 1.0)
        key, k_step = jax.random.split(key)
        params, ema_params, opt_state, losses, gnorm = train_step(params, ema_params, opt_state, batch, k_step)
        loss, aux_g, aux_s = (float(v) for v in losses)
        if step % log_every == 0:
            rows.append((step, loss, aux_g, aux_s, float(gnorm), time.time() - t0))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if eval_every and step % eval_every == 0:
            res = {k: evaluate_policy(model, ema_params, tokenizer, stats, v) for k, v in quick.items()}
            if segmentation:  # does the prefix find the named source? (arg-max patch of the head)
                seg = np.asarray(seg_predict(params, probe_batch)).reshape(probe.patch_labels.shape)
                res["held_out"]["seg_source_hit"] = source_hit_rate(seg, probe.patch_labels)
            eval_rows.append((step, res))
            msg = (
                " ".join(
                    f"{k}: acc {r['accuracy']:.2f}/{r['chance']:.2f} swap {r.get('swap_accuracy', 0):.2f}"
                    for k, r in res.items()
                )
                + f" seg {res['held_out'].get('seg_source_hit')}"
            )
            bar.write(f"step {step}: {msg}")
            (out / "eval.json").write_text(json.dumps(eval_rows, indent=1))
        if step % save_every == 0 or time.time() > deadline:
            _save(out, ema_params, rows, step, aux=params["aux"], pretrain_steps=pretrain_steps)
        if time.time() > deadline:
            print(f"time budget of {minutes} min spent at step {step}", flush=True)
            break
    bar.close()
    train_seconds = time.time() - t0
    _save(out, ema_params, rows, step, aux=params["aux"], pretrain_steps=pretrain_steps)
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
        "pretrain_steps": pretrain_steps,
        "grounding": grounding,
        "segmentation": segmentation,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _save(out: pathlib.Path, params, rows, step: int, *, aux: dict, pretrain_steps: int) -> None:
    from flowlens.tasks.tabletop.params_io import save_params
    from flowlens.tasks.tabletop.pretrain_heads import save_heads

    save_params(params, out / "params.npz")
    save_heads(aux, out)  # the pre-training heads (not part of the model; resumed by --init)
    with open(out / "loss.csv", "w") as f:
        f.write("step,loss,grounding_loss,segmentation_loss,grad_norm,seconds\n")
        for r in rows:
            f.write(",".join([str(r[0]), *(f"{v:.6f}" for v in r[1:-1]), f"{r[-1]:.1f}"]) + "\n")
    if rows:
        _plot_loss(rows, out / "loss.png", pretrain_steps)
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
    p.add_argument("--steps", type=int, default=STEPS, help="optimizer steps in all (both stages)")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=PRETRAIN_STEPS,
        help="stage 1: the first steps train the prefix on the grounding heads only",
    )
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--episodes", type=int, default=6000)
    p.add_argument("--frames-per-episode", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--init", default=None, help="continue from this params.npz (and its aux_heads.npz)")
    p.add_argument("--segmentation", type=float, default=1.0, help="weight of the referring-segmentation head")
    p.add_argument("--grounding", type=float, default=1.0, help="weight of the pooled grounding head")
    p.add_argument("--num-objects", type=int, default=None, help="objects per scene (default: 3 or 4)")
    p.add_argument("--eval-every", type=int, default=1000, help="quick held-out evaluation every N steps (0: none)")
    p.add_argument("--eval-scenes", type=int, default=100, help="held-out scenes to evaluate at the end (0: skip)")
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
        num_objects=a.num_objects,
        eval_every=a.eval_every,
        grounding=a.grounding,
        segmentation=a.segmentation,
        pretrain_steps=a.pretrain_steps,
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
