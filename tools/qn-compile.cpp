//===- qn-compile.cpp - forwards to the compiler library ------------------===//
#include "qn/compiler/Driver.h"

int main(int argc, char **argv) { return qn::compilerMain(argc, argv); }
