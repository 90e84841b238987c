"""
Experiment trackers beside out_dir/metrics.jsonl: Weights & Biases (--wandb_log=True, nanoGPT's wandb_project and
wandb_run_name) and TensorBoard (--tensorboard_log=True, event files in out_dir/tensorboard). train.py hands every
row it writes to metrics.jsonl to RunLoggers.log, so both see the same numbers: a row's numeric values are logged
as '{kind}/{key}' (train/loss, train/lr, train/grad_norm, train/tokens_per_s, train/mfu, train/nonfinite_skipped,
eval/val_loss, eval/train_val_gap, ...) at step `iter`; null (non-finite) and text values are left out.

Each package is imported only when its switch is on; a missing one ends the run with one line naming the install
command, before anything is written. Only DDP rank 0 makes a RunLoggers. Nothing is opened until the first row, so
a run that stops before training leaves no tracker files.

Resume (--init_from=resume) continues the same tracks: the checkpoint stores the wandb run id (state()), and the
resumed process re-opens that run (resume='allow') with `iter` as the x axis of every chart. The TensorBoard
writer is opened with purge_step = the resumed iteration + 1, so TensorBoard drops the events a stopped run logged
after its last checkpoint, exactly as train.py drops those rows from metrics.jsonl.
"""
import atexit
import math
import secrets

from corpus import die

TENSORBOARD_DIR = 'tensorboard'


def _require(module, switch, install):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        die(f"--{switch}=True needs the {install.split()[-1]} package, which is not installed: {install}")


class RunLoggers:
    """The trackers a run's config switches on. out: the run directory; config: train.py's resolved config
    (wandb_log, wandb_project, wandb_run_name, tensorboard_log, out_dir); start_iter: the iteration the run
    starts from; ckpt: the checkpoint it resumes from (or None)."""

    def __init__(self, out, config, start_iter=0, ckpt=None):
        self.out, self.config, self.start_iter = out, config, start_iter
        self.resumed = ckpt is not None
        self.wandb = _require('wandb', 'wandb_log', 'pip install wandb') if config.get('wandb_log') else None
        self.tb = (_require('torch.utils.tensorboard', 'tensorboard_log', 'pip install tensorboard')
                   if config.get('tensorboard_log') else None)
        self.wandb_id = (ckpt or {}).get('wandb_run_id') if self.wandb else None
        if self.wandb and not self.wandb_id:  # os.urandom: the run's RNG streams are left untouched
            self.wandb_id = secrets.token_hex(4)
        self.run = self.writer = None
        if self.wandb or self.tb:
            atexit.register(self.close)

    def _open(self):
        if self.wandb and self.run is None:
            c = self.config
            self.run = self.wandb.init(project=c.get('wandb_project'), name=c.get('wandb_run_name') or self.out.name,
                                       id=self.wandb_id, resume='allow', config=c, dir=str(self.out))
            self.run.define_metric('iter')
            self.run.define_metric('*', step_metric='iter')   # iter is the x axis, across a resume too
        if self.tb and self.writer is None:
            self.writer = self.tb.SummaryWriter(str(self.out / TENSORBOARD_DIR),
                                                purge_step=self.start_iter + 1 if self.resumed else None)

    def log(self, row):
        """One row of metrics.jsonl (a dict with 'iter' and 'kind')."""
        if not (self.wandb or self.tb):
            return
        self._open()
        step, kind = row['iter'], row.get('kind')
        nums = {(f'{kind}/{k}' if kind else k): v for k, v in row.items()
                if k not in ('iter', 'kind') and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v)}
        if self.run is not None:
            self.run.log({'iter': step, **nums})
        if self.writer is not None:
            for tag, v in nums.items():
                self.writer.add_scalar(tag, v, step)
            self.writer.flush()

    def state(self):
        """What a checkpoint keeps so that a resumed run continues these tracks."""
        return {'wandb_run_id': self.wandb_id} if self.wandb_id else {}

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.run is not None:
            self.run.finish()
            self.run = None
