"""MPDistil, meta-policy distillation (Sengupta, Dixit, Akhtar and Chakraborty, "A Good Learner can
Teach Better: Teacher-Student Collaborative Knowledge Distillation", ICLR 2024; code:
github.com/notmyname16/MPDistil).

``losses`` holds the formulas, ``model`` the task heads on a BERT-like encoder, ``phases`` the teacher
fine-tuning, student distillation and meta-teacher epochs, ``curriculum`` the REINFORCE curriculum, ``run``
the whole pipeline (resumable phase by phase) and ``cli`` the ``fastkd glue|superglue mpdistil`` command.
"""
