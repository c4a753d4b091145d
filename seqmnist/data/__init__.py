"""The data: the dataset registry (`datasets`), the IDX format (`idx`),
TFDS's download cache (`tfds_cache`), image shifts (`augment`), and the
`Data` settings with the fixed split, the sequence orders and the `tf.data`
pipelines (`pipeline`).

May import: the root's foundations. Data code never touches the strategy or
the model.
"""
