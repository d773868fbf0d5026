"""The LightningModule that trains VidTwin: autoencoder + loss, two optimizers, manual optimization.

One training update (every ``grad_accumulation`` batches):

1. forward: ``reconstruction, latents = autoencoder(video)`` (posterior sampled in training);
2. autoencoder loss (L1 [+ LPIPS] / exp(logvar) + logvar, + the regularization term: kl_loss weight
   x KL for Gaussian latents, aux_loss weight x (annealed entropy + commitment loss) for FSQ
   latents, + adaptive GAN term after ``disc_start``) -> backward into the autoencoder and ``loss.logvar``;
3. discriminator loss on the detached reconstruction -> backward into ``loss.discriminator``;
4. at the end of the accumulation window: set both learning rates from the schedules, clip,
   step both optimizers, then count the update (``complete_update``: ``train_step`` and the EMA).

``train_step`` (the number of updates applied, logged as ``train/step``) drives ``disc_start`` and
both schedules. Lightning's ``global_step`` counts optimizer steps, i.e. advances by
``lightning_steps_per_update`` (2) per update; ``vidtwin.cli.train`` translates
``trainer.max_steps`` and the checkpoint interval accordingly.

A non-finite loss or gradient skips the whole update (gradients zeroed, no optimizer step, the
counter does not advance); ``max_nonfinite_steps`` skipped updates in a row raise
``NonFiniteLossError``. The EMA, the finite-weights check of checkpoints and the checkpoint's
counters are the training contract's (:mod:`vidtwin.training.contract`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
from pytorch_lightning.utilities import rank_zero_info

from ..config import LOSS, OPTIMIZER, ConfigError, build_from_config, plain_container
from ..hints import Verbatim, command
from ..metrics import lpips_per_frame, psnr_per_frame, ssim_per_frame, to_unit_range
from ..models import VidTwin, VidTwinConfig
from ..models.regularizers import regularizer_class
from .contract import TRAINING_STATE_KEY, NonFiniteLossError, TrainingModule
from .finetune import freeze_parameters, initialise_from_checkpoint, perceptual_state_dict, read_init_state_dict
from .schedulers import build_lr_schedule

logger = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = {"target": "torch.optim.AdamW", "params": {"betas": [0.0, 0.9], "weight_decay": 1e-4}}

class VidTwinLightningModule(TrainingModule):
    """Trains a :class:`vidtwin.VidTwin` with :class:`vidtwin.losses.VidTwinLoss`.

    The first user of the training contract (:class:`vidtwin.training.contract.TrainingModule`):
    manual optimization, so it counts ``train_step`` itself and declares its accumulation window.

    Args:
        autoencoder: ``VidTwinConfig`` fields (the model architecture).
        loss: ``{target, params}`` of the loss, e.g. ``vidtwin.losses.VidTwinLoss``.
        learning_rate: base learning rate of both optimizers (``warmup_cosine`` schedules give
            absolute rates and ignore it, as in the official code).
        optimizer: ``{target, params}`` of the optimizer class used for both optimizers
            (default AdamW, betas (0, 0.9), weight decay 1e-4, as the official recipe).
        lr_scheduler_g, lr_scheduler_d: schedules of the autoencoder and discriminator optimizers
            (see :mod:`vidtwin.training.schedulers`); None keeps ``learning_rate``.
        grad_accumulation: batches per update.
        grad_clip: max global gradient norm per optimizer, or None.
        ema_decay: keep an EMA of the autoencoder weights (e.g. 0.999), used for validation,
            sample videos and saved as ``ema_state_dict``; None disables it.
        gradient_checkpointing: recompute transformer blocks in the backward pass (less memory).
        sample_posterior: train on posterior samples (the official recipe) or on the means.
        ckpt_path: initialise from this checkpoint (see :mod:`vidtwin.training.finetune`).
        ignore_keys: regexes of checkpoint keys not to load.
        freeze: regexes of autoencoder parameter names not to train.
        max_nonfinite_steps: consecutive skipped (non-finite) updates that stop training.
        allow_unsafe_pickle: allow full unpickling of ``ckpt_path`` (trusted files only). A Python
            argument or ``vidtwin train --allow-unsafe-pickle``, never a config: a config that sets
            it is refused, and it is left out of the saved hyperparameters.
    """

    monitored_metric = "val/rec_loss"  # the official checkpoint metric

    def __init__(
        self,
        autoencoder: dict,
        loss: dict,
        learning_rate: float = 1e-4,
        optimizer: Optional[dict] = None,
        lr_scheduler_g: Optional[dict] = None,
        lr_scheduler_d: Optional[dict] = None,
        grad_accumulation: int = 1,
        grad_clip: Optional[float] = None,
        ema_decay: Optional[float] = None,
        gradient_checkpointing: bool = False,
        sample_posterior: bool = True,
        ckpt_path: Optional[str] = None,
        ignore_keys: Sequence[str] = (),
        freeze: Sequence[str] = (),
        max_nonfinite_steps: int = 5,
        allow_unsafe_pickle: bool = False,
    ) -> None:
        super().__init__()
        autoencoder, loss = plain_container(autoencoder), plain_container(loss)
        optimizer = plain_container(optimizer) if optimizer is not None else DEFAULT_OPTIMIZER
        self.save_hyperparameters(ignore=["allow_unsafe_pickle"])  # a checkpoint never passes the permission on
        if int(grad_accumulation) < 1:
            raise ConfigError(f"grad_accumulation must be >= 1, got {grad_accumulation}")
        if int(max_nonfinite_steps) < 1:
            raise ConfigError(f"max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        if not isinstance(loss, dict) or "target" not in loss:
            raise ConfigError("model.params.loss must be a mapping with target and params")
        try:
            self.autoencoder = VidTwin(VidTwinConfig.from_dict(dict(autoencoder)))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.params.autoencoder: {error}") from None
        if gradient_checkpointing:
            self.autoencoder.set_gradient_checkpointing(True)

        # Read the initial weights before building the loss: the LPIPS network can take its VGG
        # weights from them, which is what lets an offline machine fine-tune with LPIPS.
        init_state = read_init_state_dict(ckpt_path, allow_unsafe_pickle) if ckpt_path else None
        loss = {**loss, "params": dict(loss.get("params") or {})}
        if init_state is not None and loss["params"].get("perceptual_weight", 0) > 0:
            lpips_given = perceptual_state_dict(init_state)
            if lpips_given and loss["params"].get("perceptual_state_dict") is None:
                loss["params"]["perceptual_state_dict"] = lpips_given
        self.loss = build_from_config(loss, "model.params.loss", LOSS)
        _check_regularization_weights(self.autoencoder.config, self.loss)

        self.init_report = None
        if init_state is not None:
            self.init_report = initialise_from_checkpoint(
                self.autoencoder, self.loss, ckpt_path, ignore_keys=list(ignore_keys), state=init_state
            )
            rank_zero_info(self.init_report.summary())
        self.frozen = freeze_parameters(self.autoencoder, list(freeze)) if freeze else []

        self.learning_rate = float(learning_rate)
        self.optimizer_config = optimizer
        self.lr_scheduler_g = plain_container(lr_scheduler_g)
        self.lr_scheduler_d = plain_container(lr_scheduler_d)
        self.grad_accumulation = int(grad_accumulation)
        self.grad_clip = grad_clip
        self.sample_posterior = bool(sample_posterior)
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.use_ema("autoencoder", ema_decay)
        self.automatic_optimization = False

        # Training counters, saved in checkpoints under TRAINING_STATE_KEY.
        self.train_step = 0  # updates applied
        self.nonfinite_streak = 0  # consecutive skipped updates
        self.nonfinite_total = 0  # skipped updates over the whole run
        self._micro_batch = 0  # batches accumulated into the current update
        self._window_finite = True  # no non-finite loss in the current accumulation window
        self._buffer_snapshot: dict[str, torch.Tensor] = {}  # buffers at the start of the window
        self._schedules = None  # (autoencoder, discriminator) lr functions, built at fit start
        self._val_lpips = None  # LPIPS network for validation (not a submodule: stays out of the state_dict)
        self._val_lpips_checked = False
        self._bad_video_count = None  # data module's counter of unreadable videos, when it has one

    # ------------------------------------------------------------------ parameters and optimizers
    def autoencoder_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of the autoencoder optimizer: trainable autoencoder weights and the learnable logvar."""
        params = [p for p in self.autoencoder.parameters() if p.requires_grad]
        params += [p for p in self.loss.get_trainable_autoencoder_parameters() if p.requires_grad]
        return params

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.loss.get_trainable_parameters() if p.requires_grad]

    @property
    def lightning_steps_per_update(self) -> int:
        """How far Lightning's ``global_step`` advances per update (one per optimizer stepped)."""
        return 2 if self.discriminator_parameters() else 1

    @property
    def update_in_progress(self) -> bool:
        """True between the batches of one accumulation window (its gradients are not checkpointed)."""
        return self._micro_batch != 0

    def _make_optimizer(self, params: list) -> torch.optim.Optimizer:
        config = dict(self.optimizer_config)
        config["params"] = {**dict(config.get("params") or {}), "params": params, "lr": self.learning_rate}
        return build_from_config(config, "model.params.optimizer", OPTIMIZER)

    def configure_optimizers(self):
        ae_params = self.autoencoder_parameters()
        if not ae_params:
            raise ConfigError("no trainable autoencoder parameters (check freeze)")
        optimizers = [self._make_optimizer(ae_params)]
        disc_params = self.discriminator_parameters()
        if disc_params:
            optimizers.append(self._make_optimizer(disc_params))
        rank_zero_info(
            f"trainable parameters: autoencoder {sum(p.numel() for p in ae_params):,}, "
            f"discriminator {sum(p.numel() for p in disc_params):,}"
        )
        return optimizers

    @property
    def batches_per_update(self) -> int:
        """The accumulation window: ``grad_accumulation`` batches per update."""
        return self.grad_accumulation

    def refused_trainer_settings(self) -> dict[str, str]:
        """Lightning can neither accumulate nor clip under manual optimization: the module's own settings."""
        return {
            "accumulate_grad_batches": "set model.params.grad_accumulation instead (the module accumulates itself)",
            "gradient_clip_val": "set model.params.grad_clip instead (the module clips itself)",
            "gradient_clip_algorithm": "model.params.grad_clip always clips the global norm",
        }

    def official_total_updates(self) -> int:
        """The official cosine length: batches of a single-process training loader x max_epochs.

        It ignores the number of processes (with DDP each sees 1/N of the batches) and max_steps,
        as the official training does; see `vidtwin.training.schedulers`.
        """
        trainer = self.trainer
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ConfigError("total_steps: official needs lightning.trainer.max_epochs (the official length counts epochs)")
        if trainer.datamodule is None:
            raise ConfigError("total_steps: official needs a data module (it counts the batches of its training loader)")
        batches = len(trainer.datamodule.train_dataloader())  # no distributed sampler: all batches
        return max(batches * trainer.max_epochs // self.grad_accumulation, 1)

    def setup(self, stage: str) -> None:
        # Each update runs two backward passes over different parameter sets (and none through the
        # discriminator before disc_start), so DDP must look for unused parameters.
        ddp_kwargs = getattr(self.trainer.strategy, "_ddp_kwargs", None)
        if isinstance(ddp_kwargs, dict) and not ddp_kwargs.get("find_unused_parameters", False):
            ddp_kwargs["find_unused_parameters"] = True
            rank_zero_info("DDP: enabling find_unused_parameters (two optimizers with separate backward passes)")

    def on_fit_start(self) -> None:
        super().on_fit_start()  # the EMA restarts here when the resumed checkpoint had none
        self._schedules = (
            build_lr_schedule(self.lr_scheduler_g, self.learning_rate, self.total_updates, self.official_total_updates),
            build_lr_schedule(self.lr_scheduler_d, self.learning_rate, self.total_updates, self.official_total_updates),
        )
        data = getattr(self.trainer, "datamodule", None)
        self._bad_video_count = getattr(data, "bad_video_count", None)

    def current_learning_rates(self) -> tuple[float, float]:
        """(autoencoder, discriminator) learning rates for the update about to be applied."""
        return self._schedules[0](self.train_step), self._schedules[1](self.train_step)

    def _optimizers(self) -> tuple[Any, Optional[Any]]:
        optimizers = self.optimizers()
        if not isinstance(optimizers, (list, tuple)):
            return optimizers, None
        return optimizers[0], (optimizers[1] if len(optimizers) > 1 else None)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        video = batch["video"]  # (B, 3, T, H, W) in [-1, 1]
        opt_g, opt_d = self._optimizers()
        if self._micro_batch == 0:
            # Forward passes update buffers (the discriminator's BatchNorm statistics, LeCAM EMAs)
            # even when the update is later skipped; keep a copy to put back in that case.
            self._buffer_snapshot = {n: b.detach().clone() for n, b in self._persistent_buffers()}
        reconstruction, latents = self.autoencoder(video, sample=self.sample_posterior)  # (B, 3, T, H, W)
        regularization_log = self.autoencoder.regularization_log(latents, self.train_step)
        scale = 1.0 / self.grad_accumulation

        self.toggle_optimizer(opt_g)
        ae_loss, log = self.loss(regularization_log, video, reconstruction, 0, self.train_step,
                                 last_layer=self.autoencoder.get_last_layer(), split="train")
        log.update(_quantization_log(latents, regularization_log, "train"))
        log["train/psnr"] = _batch_psnr(video, reconstruction)
        finite = self.loss_is_finite(ae_loss)
        if finite:
            self.manual_backward(ae_loss * scale)
        self.untoggle_optimizer(opt_g)

        if opt_d is not None and finite and not self._discriminator_active():
            # Before disc_start the official discriminator loss is exactly 0 * loss, whose gradients
            # are zeros: skip its forward and backward and hand the optimizer zero gradients.
            log["train/disc_loss"] = torch.zeros((), device=video.device)
        elif opt_d is not None and finite:
            self.toggle_optimizer(opt_d)
            disc_loss, disc_log = self.loss(regularization_log, video, reconstruction, 1, self.train_step,
                                            last_layer=None, split="train")
            log.update(disc_log)
            finite = self.loss_is_finite(disc_loss)
            if finite:
                self.manual_backward(disc_loss * scale)
            self.untoggle_optimizer(opt_d)

        self._window_finite &= finite
        self._micro_batch += 1
        if self._micro_batch < self.grad_accumulation:
            return
        self._micro_batch = 0
        window_finite, self._window_finite = self._window_finite, True
        self._finish_update(opt_g, opt_d, window_finite, ae_loss, log)

    def _discriminator_active(self) -> bool:
        """Whether the discriminator loss is switched on at this update (or has side effects, LeCAM)."""
        if getattr(self.loss, "lecam_loss_weight", 0.0) > 0:
            return True
        return getattr(self.loss, "disc_factor", 1.0) > 0 and self.train_step >= getattr(self.loss, "disc_start", 0)

    def _grad_norm(self, optimizer) -> torch.Tensor:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        return torch.nn.utils.get_total_norm(grads)

    def _finish_update(self, opt_g, opt_d, finite: bool, ae_loss: torch.Tensor, log: dict) -> None:
        """Clip and step both optimizers, or skip the update when anything was non-finite."""
        optimizers = [opt for opt in (opt_g, opt_d) if opt is not None]
        grad_norms = [self._grad_norm(opt) for opt in optimizers]
        # Gradients are identical on every rank after DDP's all-reduce, so this decision agrees.
        # With fp16's GradScaler, inf gradients are expected while it calibrates the loss scale: the
        # scaler skips those steps and lowers the scale itself, so only the loss is checked here.
        if not self.scales_gradients():
            finite = finite and all(bool(torch.isfinite(n)) for n in grad_norms)
        if not finite:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            self._skip_update()
            return
        self.nonfinite_streak = 0
        if opt_d is not None:
            # Parameters without gradients (discriminator before disc_start) get zeros, so that every
            # optimizer (and a GradScaler) steps exactly as after an all-zero backward.
            for group in opt_d.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
        for opt, lr in zip(optimizers, self.current_learning_rates()):
            for group in opt.param_groups:
                group["lr"] = lr
            if self.grad_clip is not None:
                self.clip_gradient_norm(opt, self.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        lr_g, lr_d = self.current_learning_rates()
        self.complete_update()  # train_step and the EMA
        self._log_update(ae_loss, log, grad_norms, lr_g, lr_d)

    def _persistent_buffers(self) -> Iterator[tuple[str, torch.Tensor]]:
        saved = self.state_dict(keep_vars=True)
        return ((name, buffer) for name, buffer in self.named_buffers() if name in saved)

    def _skip_update(self) -> None:
        with torch.no_grad():
            for name, buffer in self._persistent_buffers():
                buffer.copy_(self._buffer_snapshot[name])
        self.nonfinite_streak += 1
        self.nonfinite_total += 1
        logger.warning(
            "non-finite loss or gradient at update %d: update skipped (%d in a row, %d in total)",
            self.train_step, self.nonfinite_streak, self.nonfinite_total,
        )
        self.log("train/nonfinite_skipped", float(self.nonfinite_total), on_step=True, on_epoch=False)
        if self.nonfinite_streak >= self.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_streak} consecutive updates had a non-finite loss or gradient (last good "
                f"update: {self.train_step}); training stopped without saving. Lower the learning rate, "
                "set grad_clip, or check the data; resume from the last checkpoint"
            )

    def _log_update(self, ae_loss: torch.Tensor, log: dict, grad_norms: list, lr_g: float, lr_d: float) -> None:
        log = {key: value.float() for key, value in log.items()}
        log["train/grad_norm_g"] = grad_norms[0].float()
        if len(grad_norms) > 1:
            log["train/grad_norm_d"] = grad_norms[1].float()
        log["train/lr_g"] = lr_g
        log["train/lr_d"] = lr_d
        log["train/nonfinite_skipped"] = float(self.nonfinite_total)
        if self._bad_video_count is not None:
            log["train/bad_videos"] = float(self._bad_video_count())
        self.log_dict(log, on_step=True, on_epoch=False)
        self.log("train/step", float(self.train_step), on_step=True, on_epoch=False, prog_bar=True)
        # The progress bar shows what a person can judge: the L1 error (pixels in [-1, 1]) and the PSNR
        # of this batch. The objective itself (train/total_loss, logged above) is the negative
        # log-likelihood sum(L1 / exp(logvar) + logvar) per frame with a learned log-variance: it goes
        # negative and keeps falling as logvar shrinks, so its value says little about quality.
        self.log("rec", log["train/rec_loss"], on_step=True, on_epoch=False, prog_bar=True, logger=False)
        self.log("psnr", log["train/psnr"], on_step=True, on_epoch=False, prog_bar=True, logger=False)

    # ------------------------------------------------------------------ validation
    def _validation_lpips(self):
        """The LPIPS network for validation: the loss's, else a real one if its weights are local, else None."""
        if self.loss.perceptual_loss is not None:
            return self.loss.perceptual_loss
        if not self._val_lpips_checked:
            self._val_lpips_checked = True
            from ..losses import LPIPS, LPIPSWeightsUnavailable

            try:
                self._val_lpips = LPIPS.from_sources(allow_download=False)
            except LPIPSWeightsUnavailable as error:
                rank_zero_info(f"validation LPIPS skipped: {str(error).split('. ')[0]}")
        if self._val_lpips is not None and self._val_lpips.scaling_layer.shift.device != self.device:
            self._val_lpips = self._val_lpips.to(self.device)
        return self._val_lpips

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        video = batch["video"]  # (B, 3, T, H, W) in [-1, 1]
        with self.ema_weights():
            reconstruction, latents = self.autoencoder(video, sample=False)  # (B, 3, T, H, W)
        _, log = self.loss(self.autoencoder.regularization_log(latents, self.train_step), video, reconstruction,
                           0, self.train_step, last_layer=None, split="val")
        video_c, reconstruction_c = video.float().clamp(-1, 1), reconstruction.float().clamp(-1, 1)
        unit_video, unit_rec = to_unit_range(video_c), to_unit_range(reconstruction_c)
        metrics = {
            "val/rec_loss": log["val/rec_loss"].float(),
            "val/ssim": ssim_per_frame(unit_rec, unit_video, compute_dtype=torch.float32).mean().float(),
        }
        metrics.update({f"val/{k}": v for k, v in self.autoencoder.structure_regularizer.metrics(latents).items()})
        lpips = self._validation_lpips()
        if lpips is not None:
            metrics["val/lpips"] = lpips_per_frame(reconstruction_c, video_c, lpips).mean()
        batch_size = video.shape[0]
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size)
        psnr = psnr_per_frame(unit_rec, unit_video, max_value=100.0).mean().float()
        self.log("val/psnr", psnr, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size, prog_bar=True)

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        """Eval-mode reconstruction (EMA weights when on) of (B, 3, T, H, W) in [-1, 1], for sample videos."""
        was_training = self.autoencoder.training
        self.autoencoder.eval()
        try:
            with self.ema_weights():
                reconstruction, _ = self.autoencoder(video, sample=False)
        finally:
            self.autoencoder.train(was_training)
        return reconstruction

    def training_samples(self, batch: dict, max_samples: int) -> Mapping[str, torch.Tensor]:
        """The first clips of a training batch and their reconstructions, (b, 3, T, H, W) in [-1, 1]."""
        video = batch["video"][:max_samples]  # (b, 3, T, H, W)
        return {"input": video, "reconstruction": self.reconstruct(video).to(video.dtype)}

    def summary_commands(self, run_dir: Path, config_path: Path, checkpoint: Path, datamodule: Any) -> dict[str, str]:
        """A ready ``vidtwin reconstruct`` command on a video of the run's own data."""
        from .run_report import example_video

        video = example_video(datamodule) or Verbatim("VIDEO.mp4")
        return {"reconstruct": command("reconstruct", "--config", config_path, "--ckpt", checkpoint, "--input", video,
                                       "--output", run_dir / "reconstructions")}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # finite weights, train_step, EMA
        checkpoint[TRAINING_STATE_KEY]["nonfinite_total"] = self.nonfinite_total

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)  # train_step, EMA
        self.nonfinite_total = int((checkpoint.get(TRAINING_STATE_KEY) or {}).get("nonfinite_total", 0))
        self.nonfinite_streak = 0
        self._micro_batch = 0  # gradients of a partial accumulation window are not saved


def _batch_psnr(video: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Mean per-frame PSNR (dB) of a training batch, both (B, 3, T, H, W) in [-1, 1]; no gradient."""
    with torch.no_grad():
        reference = to_unit_range(video.float().clamp(-1, 1))
        output = to_unit_range(reconstruction.detach().float().clamp(-1, 1))
        return psnr_per_frame(output, reference, max_value=100.0).mean().float()


def _check_regularization_weights(config: VidTwinConfig, loss: Any) -> None:
    """FSQ aux losses reach the objective only through the loss's ``aux_loss`` weight: refuse a
    config that switches them on but would silently drop them (e.g. a KL config's weights)."""
    weights = getattr(loss, "regularization_weights", None)
    if not regularizer_class(config).has_tokens or weights is None:
        return
    if (config.entropy_loss_weight > 0 or config.commitment_loss_weight > 0) and "aux_loss" not in weights:
        raise ConfigError(
            "an FSQ model with entropy or commitment loss needs model.params.loss.params.regularization_weights "
            "with aux_loss (VidTok uses {aux_loss: 1.0}); kl_loss does not apply to FSQ latents"
        )


def _quantization_log(latents, regularization_log: dict, split: str) -> dict:
    """FSQ codebook usage and perplexity per latent and the unweighted aux losses, for the logger."""
    if latents.quantization is None:
        return {}
    log = {f"{split}/{key}": value.detach() for key, value in latents.quantization.items()
           if key.endswith(("codebook_usage", "perplexity"))}
    for term in ("entropy_loss", "commitment_loss"):
        log[f"{split}/{term}"] = regularization_log[term].detach()
    return log
