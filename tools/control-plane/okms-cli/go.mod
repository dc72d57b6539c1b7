// OVH's own OKMS CLI, for the okms-emulator compatibility script
// (tools/control-plane/build.sh okms). The module proxy this project's machines use has refused
// github.com/ovh/okms-cli (403 "not available") so far; the check is skipped until it serves it.
module github.com/okms-operator/okms-operator/tools/control-plane/okms-cli

go 1.26.0

require github.com/ovh/okms-cli v0.4.4
