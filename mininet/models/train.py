"""Old home of the training loop and checkpoints, which now live in mininet.training; the
names are re-exported here so that `from mininet.models.train import ...` keeps working.
Patch module attributes (CHECK_EVERY) on mininet.training itself."""
from ..training import (CHECK_EVERY, CHECKPOINT_VERSION, OPTIMIZERS, SCHEDULES,
                        CheckpointError, TrainingDiverged, build_from_checkpoint,
                        checkpoint_epoch, evaluate, evaluate_lm, fit, load_checkpoint,
                        make_optimizer, make_scheduler, read_checkpoint_header,
                        save_checkpoint, train_epoch, train_lm_epoch)

__all__ = ["CHECK_EVERY", "CHECKPOINT_VERSION", "OPTIMIZERS", "SCHEDULES", "CheckpointError",
           "TrainingDiverged", "build_from_checkpoint", "checkpoint_epoch", "evaluate",
           "evaluate_lm", "fit", "load_checkpoint", "make_optimizer", "make_scheduler",
           "read_checkpoint_header", "save_checkpoint", "train_epoch", "train_lm_epoch"]
