"""Generated from proto/oms/v1 by scripts/gen_proto.py."""
