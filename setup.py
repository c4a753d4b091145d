"""Packaging: metadata and dependencies are in setup.cfg, build requirements
in pyproject.toml.

The repository's gin/ folder ships inside the package as seqmnist/gin/, so
`--gin_file=pixel.gin` works from an installed wheel too.

`seqmnist._fused_rnn` is a TensorFlow custom op (seqmnist/native/
fused_rnn.cc), compiled with the installed TensorFlow's flags against the
oneDNN of onednn-devel-cpu-gomp. If it cannot be built (no compiler, say),
the install goes on without it, saying why, and seqmnist uses Keras' layers
(seqmnist/model/fused.py).
"""
import glob
import os
import subprocess
import sys

import setuptools
from setuptools.command import build_ext


class BuildFusedOp(build_ext.build_ext):
  """Builds the custom op with TensorFlow's compile and link flags."""

  def build_extension(self, ext):
    try:
      self._compile(ext)
    except Exception as e:  # pylint: disable=broad-except
      print(f'seqmnist: warning: the fused RNN op was not built ({e}); '
            "seqmnist will use Keras' layers", file=sys.stderr)

  def _compile(self, ext):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    include = _onednn_dir('include', 'oneapi/dnnl/dnnl.hpp')
    lib = _onednn_dir('lib', 'libdnnl.so.3')
    out = self.get_ext_fullpath(ext.name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    command = [os.environ.get('CXX', 'g++'), '-O2', '-fPIC', '-shared',
               '-Wno-deprecated-declarations', *ext.sources, '-o', out,
               *tf.sysconfig.get_compile_flags(), f'-I{include}',
               *tf.sysconfig.get_link_flags(), f'-L{lib}', '-l:libdnnl.so.3']
    print(' '.join(command))
    subprocess.run(command, check=True)


def _onednn_dir(kind, marker):
  for prefix in (sys.prefix, sys.base_prefix, *sys.path):
    for base in (prefix, os.path.dirname(os.path.dirname(
        os.path.dirname(prefix)))):
      folder = os.path.join(base, kind)
      if glob.glob(os.path.join(folder, marker)):
        return folder
  raise FileNotFoundError(f'oneDNN {kind} ({marker}) not found; install '
                          'onednn-devel-cpu-gomp')


setuptools.setup(
    package_dir={'seqmnist': 'seqmnist', 'seqmnist.gin': 'gin'},
    packages=[*setuptools.find_packages(include=['seqmnist', 'seqmnist.*']),
              'seqmnist.gin'],
    package_data={'seqmnist.gin': ['*.gin', '*/*.gin']},
    ext_modules=[setuptools.Extension('seqmnist._fused_rnn',
                                      ['seqmnist/native/fused_rnn.cc'])],
    cmdclass={'build_ext': BuildFusedOp},
)
