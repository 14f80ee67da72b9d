// bench/bench_shim.cc — adapts bench/bench.h (C) to Google Benchmark. The only C++ file
// in floormta: it owns main() of floormta-bench.
#include "bench/bench.h"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <ftw.h>
#include <string>
#include <unistd.h>

namespace
{

benchmark::State &as_state(bench_state *st)
{
    return *reinterpret_cast<benchmark::State *>(st);
}

std::string &scratch()
{
    static std::string dir;
    return dir;
}

int remove_entry(const char *path, const struct stat *, int, struct FTW *)
{
    return ::remove(path);
}

void remove_scratch()
{
    if (!scratch().empty())
        nftw(scratch().c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

} // namespace

extern "C" void bench_register(const char *name, bench_fn fn)
{
    benchmark::RegisterBenchmark(
            name, [fn](benchmark::State &st) { fn(reinterpret_cast<bench_state *>(&st)); });
}

extern "C" void bench_register_real_time(const char *name, bench_fn fn)
{
    benchmark::RegisterBenchmark(name, [fn](benchmark::State &st) {
        fn(reinterpret_cast<bench_state *>(&st));
    })->UseRealTime();
}

extern "C" bool bench_next(bench_state *st)
{
    // KeepRunning() is the loop condition Google Benchmark offers to non-range loops.
    return as_state(st).KeepRunning();
}

extern "C" void bench_pause(bench_state *st)
{
    as_state(st).PauseTiming();
}

extern "C" void bench_resume(bench_state *st)
{
    as_state(st).ResumeTiming();
}

extern "C" void bench_set_items(bench_state *st, int64_t items)
{
    as_state(st).SetItemsProcessed(items);
}

extern "C" void bench_set_bytes(bench_state *st, int64_t bytes)
{
    as_state(st).SetBytesProcessed(bytes);
}

extern "C" void bench_set_counter(bench_state *st, const char *name, double value)
{
    as_state(st).counters[name] = benchmark::Counter(value);
}

extern "C" void bench_fail(bench_state *st, const char *msg)
{
    as_state(st).SkipWithError(msg);
}

extern "C" const char *bench_scratch_dir(void)
{
    if (scratch().empty()) {
        char tmpl[] = "/tmp/floormta-bench.XXXXXX";
        if (!mkdtemp(tmpl))
            std::abort();
        scratch() = tmpl;
        std::atexit(remove_scratch);
    }
    return scratch().c_str();
}

int main(int argc, char **argv)
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
