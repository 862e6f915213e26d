// The CUDA host mode's stand-in for the toolkit header: core/cudasim/sim.h.
#include "core/cudasim/sim.h"
