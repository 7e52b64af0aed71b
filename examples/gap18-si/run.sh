#!/bin/sh
# GAP-18's gap_fit command line (Bartok, Kermode, Bernstein, Csanyi, PRX 8, 041048 (2018); the exact
# line is in tests/data/README.md) run with pargap-fit on the public Si_tiny subset (53 configs,
# 229 atoms) with GAP-18's glue.xml core potential.
#
# Only changes to the line: at_file and gp_file names, and n_sparse (9000 in GAP-18; Si_tiny has
# only 229 SOAP descriptors, so N_SPARSE defaults to 100). L_MAX / N_MAX (12 / 10 in GAP-18) can
# be lowered to save time. Then the fit is evaluated on its training set and on the 17 other
# GAP-18 structures of QUIP's regression data (Si.np1.xyz).
#
#   sh run.sh                 # 2 ranks; NP=8 sh run.sh for 8
#
# The data comes from the repository through examples/fetch.py (DATA_DIR=folder overrides it).
#
# Under mpirun, quote each {...} value: a bare ':' between words would be mpirun's separator
# between programs, and the shell splits unquoted braces with spaces.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
FETCH="python3 $HERE/../fetch.py"
SI_TINY=$($FETCH si_gap18_subsets/Si_tiny.xyz)
GLUE=$($FETCH si_gap18_subsets/glue.xml)
SI_NP1=$($FETCH quip_gapfit_regression/Si.np1.xyz)
NP=${NP:-2}
N_SPARSE=${N_SPARSE:-100}
L_MAX=${L_MAX:-12}
N_MAX=${N_MAX:-10}
OUT=${OUT:-$HERE/gap18_si_tiny.h5}

mpirun -n "$NP" pargap-fit at_file="$SI_TINY" \
  "gap={soap l_max=$L_MAX n_max=$N_MAX atom_sigma=0.5 zeta=4 cutoff=5.0 cutoff_transition_width=1.0 central_weight=1.0 n_sparse=$N_SPARSE delta=3.0 f0=0.0 covariance_type=dot_product sparse_method=cur_points}" \
  "default_sigma={0.001 0.1 0.05 0.0}" \
  "config_type_sigma={liq:0.003:0.15:0.2:0.0:amorph:0.01:0.2:0.4:0.0:sp:0.01:0.2:0.4:0.0}" \
  energy_parameter_name=dft_energy force_parameter_name=dft_force virial_parameter_name=dft_virial \
  config_type_parameter_name=config_type sparse_jitter=1.0e-8 e0_offset=2.0 \
  core_param_file="$GLUE" "core_ip_args={IP Glue}" gp_file="$OUT" rnd_seed=1

echo "== training set (Si_tiny.xyz)"
pargap-eval "$OUT" "$SI_TINY"
echo "== validation: other GAP-18 structures (quip_gapfit_regression/Si.np1.xyz)"
pargap-eval "$OUT" "$SI_NP1"
