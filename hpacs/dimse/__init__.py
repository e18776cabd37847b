"""DIMSE (PS3.7): command sets, message assembly from PDVs, and the services hpacs provides."""
