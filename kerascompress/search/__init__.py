"""The parts of the budget-driven search: per-group widths, latency tables, sensitivity, allocation.

Structure search picks a width for every prunable channel group. It needs to know what
a width costs on the target (`latency_table`: measured on the target's runtime at the
precision the model ships in, read from a table measured on the device, or estimated
from MACs) and what it costs in accuracy (`sensitivity`: the loss of the model with
one group cut, before fine-tuning), and combines both into a path of configurations
from the original to the smallest (`allocation`), along which the pass bisects with
real fine-tuning and verdicts.
"""
