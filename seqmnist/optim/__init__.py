"""How weights are updated: optimizers and learning-rate schedules by name
(`optimizers`), per-variable gradient clipping (`clipping`), and the weight
average (`averaging`: the one owner of the averaged weights and of their
place in a checkpoint).

May import: the root's foundations.
"""
