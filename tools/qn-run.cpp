//===- qn-run.cpp - forwards to the runtime library -----------------------===//
#include "qn/runtime/Driver.h"

int main(int argc, char **argv) { return qn::rt::runnerMain(argc, argv); }
