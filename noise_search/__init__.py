"""lmo-dp's privacy core: noise mechanisms, accountants, calibration and the noise search.

Pure math on numpy/scipy (and dp-accounting). Nothing in this package imports torch, Ray or
MLflow; the torch sampler of training noise is :mod:`trainers.noise`.
"""

from noise_search.accountants import (
    ACCOUNTANTS,
    Accountant,
    PldAccountant,
    PrivacySpent,
    PrvAccountant,
    RdpAccountant,
    accountants_for,
    compute_epsilon,
    get_accountant,
)
from noise_search.calibration import Calibration, calibrate, calibrate_parameter, solve_monotone
from noise_search.errors import (
    CalibrationError,
    InputError,
    LmoDpError,
    ParameterError,
    UnsupportedError,
)
from noise_search.events import LmoDpEvent, dp_sgd_event, mechanism_event
from noise_search.mechanisms import (
    LMO,
    Gaussian,
    Laplace,
    Mechanism,
    mechanism_class,
    mechanism_from_dict,
    mechanism_names,
)

__all__ = [
    "ACCOUNTANTS",
    "LMO",
    "Accountant",
    "Calibration",
    "CalibrationError",
    "Gaussian",
    "InputError",
    "Laplace",
    "LmoDpError",
    "LmoDpEvent",
    "Mechanism",
    "ParameterError",
    "PldAccountant",
    "PrivacySpent",
    "PrvAccountant",
    "RdpAccountant",
    "UnsupportedError",
    "accountants_for",
    "calibrate",
    "calibrate_parameter",
    "compute_epsilon",
    "dp_sgd_event",
    "get_accountant",
    "mechanism_class",
    "mechanism_event",
    "mechanism_from_dict",
    "mechanism_names",
    "solve_monotone",
]
