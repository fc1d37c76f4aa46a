"""lmo-dp's privacy core: noise mechanisms, accountants, calibration and the noise search.

Pure math on numpy/scipy. Importing this package does not import torch, Ray or MLflow;
:mod:`noise_search.torch_noise` (torch samplers) is loaded on first use.
"""

from noise_search.accountants import (
    ACCOUNTANTS,
    Accountant,
    PldAccountant,
    PrivacyLedger,
    PrivacySpent,
    PrvAccountant,
    RdpAccountant,
    compute_epsilon,
    get_accountant,
)
from noise_search.calibration import Calibration, calibrate, solve_monotone
from noise_search.errors import (
    CalibrationError,
    InputError,
    LmoDpError,
    ParameterError,
    UnsupportedError,
)
from noise_search.mechanisms import (
    LMO,
    MECHANISMS,
    Gaussian,
    Laplace,
    Mechanism,
    mechanism_from_dict,
)

__all__ = [
    "ACCOUNTANTS",
    "LMO",
    "MECHANISMS",
    "Accountant",
    "Calibration",
    "CalibrationError",
    "Gaussian",
    "InputError",
    "Laplace",
    "LmoDpError",
    "Mechanism",
    "ParameterError",
    "PldAccountant",
    "PrivacyLedger",
    "PrivacySpent",
    "PrvAccountant",
    "RdpAccountant",
    "UnsupportedError",
    "calibrate",
    "compute_epsilon",
    "get_accountant",
    "mechanism_from_dict",
    "solve_monotone",
]
