"""The model: the cell registry (`cells`: every per-cell fact), the Keras
recurrent layers the cells build (`rnn_layers`), how they run on the machine
at hand (`implementations`: 'keras', 'fused', 'unroll', and what 'auto'
picks from the CPU's features) and the fused oneDNN op they may run on
(`fused`), gate-bias initialisation (`gates`), replica-invariant
dropout (`dropout`), and the `Model` settings with the Keras model built
from them (`network`).

May import: the root's foundations. The model never sees gin files, flags or
data.
"""
