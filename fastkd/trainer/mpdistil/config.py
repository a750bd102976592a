"""``MPDistilConfig``: every setting of an MPDistil run, with the released code's defaults, and the
checks that run before any training (bad input is a clear error, not a wasted teacher fine-tune)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fastkd.trainer.glue.data import GlueTask, get_task
from fastkd.trainer.mpdistil.curriculum import CurriculumOptions
from fastkd.trainer.mpdistil.losses import META_LOSSES

PHASES = ("teacher", "student_no_kd", "student_kd", "distill", "curriculum")
# The settings each phase adds to those of the phases before it (a phase depends on its own and all
# earlier ones): a finished phase is resumed only when none of them changed.
PHASE_SETTINGS = {
    "teacher": (
        *("task", "teacher", "teacher_finetuned", "teacher_epochs", "teacher_lr", "data_dir", "max_length"),
        *("batch_size", "quiz_fraction", "seed", "max_train_samples", "max_eval_samples", "curriculum_tasks"),
        "extra",
    ),
    "student_no_kd": ("student_layers", "student_from", "first_layers", "epochs", "student_lr"),
    "student_kd": ("alpha", "temperature"),
    "distill": ("meta_loss", "meta_lr", "beta", "pkd_layers"),
    "curriculum": ("episodes", "reward", "gamma", "detach_state", "step_every_batch", "relative_discount"),
}


def first_affected_phase(changed: set[str]) -> str | None:
    """The earliest phase whose results depend on one of the ``changed`` settings."""
    for phase in PHASES:
        if changed & set(PHASE_SETTINGS[phase]):
            return phase
    return None


@dataclass
class MPDistilConfig:
    """An MPDistil run. Defaults follow github.com/notmyname16/MPDistil (``main_superglue.py``): batch 8,
    lr 2e-5 (teacher), 3e-5 (student), 1e-3 (T′ head and policy), 10 epochs, α 0.5, β 100, τ 5, 200
    episodes, γ 0.99, collaborative loss, binary reward; the quirk fixes are off (see ``curriculum``).

    ``task`` names the main task (``get_task``: GLUE names, SuperGLUE names, ``superglue_rte``);
    ``curriculum_tasks`` the policy's task pool (None: the main task alone, as the released code runs);
    ``pkd_layers`` the teacher layers (1-based) matched with student layers 1…L_S−1 (None: the first
    L_S−1); ``stop_after`` ends the run after that phase (rerun without it to resume)."""

    task: str
    teacher: str
    output: str
    student_layers: int
    student_from: str | None = None
    first_layers: bool = True
    teacher_finetuned: bool = False
    data_dir: str | None = None
    curriculum_tasks: list[str] | None = None
    meta_loss: str = "collaborative"
    reward: str = "binary"
    episodes: int = 200
    epochs: int = 10
    teacher_epochs: int = 10
    batch_size: int = 8
    max_length: int = 128
    quiz_fraction: float = 0.1
    teacher_lr: float = 2e-5
    student_lr: float = 3e-5
    meta_lr: float = 1e-3
    alpha: float = 0.5
    beta: float = 100.0
    temperature: float = 5.0
    pkd_layers: list[int] | None = None
    gamma: float = 0.99
    detach_state: bool = False
    step_every_batch: bool = False
    relative_discount: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 42
    stop_after: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def curriculum(self) -> CurriculumOptions:
        return CurriculumOptions(
            self.episodes,
            self.reward,
            self.gamma,
            self.meta_lr,
            self.student_lr,
            1.0,
            self.detach_state,
            self.step_every_batch,
            self.relative_discount,
        )

    def settings(self) -> dict[str, Any]:
        """What must match for a resume (everything but ``output`` and ``stop_after``)."""
        values = asdict(self)
        values.pop("output"), values.pop("stop_after")
        return values


def main_task(config: MPDistilConfig) -> GlueTask:
    return get_task(config.task)


def pool_tasks(config: MPDistilConfig) -> dict[str, GlueTask]:
    """The curriculum's tasks by head name (the main task first); unknown names are a clear error."""
    main = main_task(config)
    pool = {main.name: main}
    for name in config.curriculum_tasks or []:
        try:
            task = get_task(name)
        except ValueError as err:
            raise ValueError(f"--curriculum-tasks: {err}") from err
        pool.setdefault(task.name, task)
    return pool


def _check_numbers(c: MPDistilConfig) -> None:
    if not 0.0 < c.quiz_fraction < 1.0:
        raise ValueError(f"quiz fraction must be in (0, 1), got {c.quiz_fraction}")
    for name in ("epochs", "batch_size", "student_layers", "max_length"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.teacher_epochs < 0:
        raise ValueError(f"teacher_epochs must be >= 0, got {c.teacher_epochs}")
    if not 0.0 <= c.alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {c.alpha}")
    if c.beta < 0 or not c.temperature > 0:
        raise ValueError(
            f"need beta >= 0 and temperature > 0, got beta={c.beta}, temperature={c.temperature}"
        )
    if c.meta_loss not in META_LOSSES:
        raise ValueError(f"meta loss must be one of {sorted(META_LOSSES)}, got {c.meta_loss!r}")
    if c.stop_after is not None and c.stop_after not in PHASES:
        raise ValueError(f"stop_after must be one of {list(PHASES)}, got {c.stop_after!r}")
    c.curriculum()  # episodes, reward, gamma, quirk flags


def check_teacher(c: MPDistilConfig, teacher_config: Any) -> None:
    """Label count (a fine-tuned teacher), student depth and the PKD layer map against the teacher."""
    task = main_task(c)
    if c.teacher_finetuned and teacher_config.num_labels != task.num_labels:
        raise ValueError(
            f"teacher {c.teacher!r} has {teacher_config.num_labels} labels, task {task.name} has "
            f"{task.num_labels}; drop --teacher-finetuned to fine-tune it with a new head"
        )
    depth = teacher_config.num_hidden_layers
    if c.student_from is None and c.student_layers > depth:
        raise ValueError(f"cannot keep {c.student_layers} of the teacher's {depth} layers")
    layers = c.pkd_layers if c.pkd_layers is not None else [1 + i for i in range(c.student_layers - 1)]
    if len(layers) != c.student_layers - 1 or not all(1 <= layer <= depth for layer in layers):
        raise ValueError(
            f"pkd layers must be {c.student_layers - 1} teacher layers in 1..{depth} (one per student "
            f"layer 1..{c.student_layers - 1}), got {layers}"
        )


def validate(c: MPDistilConfig) -> None:
    """All the checks that need no model weights: tasks, numbers, the teacher's config."""
    from transformers import AutoConfig

    main_task(c)
    pool_tasks(c)
    _check_numbers(c)
    try:
        teacher_config = AutoConfig.from_pretrained(c.teacher)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load teacher {c.teacher!r}: {err}") from err
    check_teacher(c, teacher_config)
