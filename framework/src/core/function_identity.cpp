// Function identity: (module build-id, offset of the function, offset of its trampoline). The module is found through
// the dynamic loader's list of loaded objects, so it works for the main executable and for shared libraries alike.
#include <mpx/function.hpp>

#include <cstring>
#include <elf.h>
#include <link.h>
#include <string>

namespace mpx {

namespace {

struct Module {
  std::uintptr_t base = 0;  // load bias: address = base + offset in the file's virtual address space
  std::string build_id;
  std::string path;
};

std::string hex(const unsigned char* bytes, std::size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(digits[bytes[i] >> 4]);
    out.push_back(digits[bytes[i] & 0xf]);
  }
  return out;
}

std::string build_id_of_module(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const std::size_t name_size = (note->n_namesz + 3) & ~std::size_t{3};
      const std::size_t desc_size = (note->n_descsz + 3) & ~std::size_t{3};
      const unsigned char* name = p + sizeof(ElfW(Nhdr));
      const unsigned char* desc = name + name_size;
      if (desc + note->n_descsz > end) break;
      if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
        return hex(desc, note->n_descsz);
      }
      p = desc + desc_size;
    }
  }
  return {};
}

// The loaded module whose segments contain `address`.
Module module_containing(std::uintptr_t address) {
  struct Search {
    std::uintptr_t address;
    Module found;
    bool ok = false;
  } search{address, {}, false};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          const std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
          if (s->address >= start && s->address < start + ph.p_memsz) {
            s->found = Module{info->dlpi_addr, build_id_of_module(info), info->dlpi_name ? info->dlpi_name : ""};
            s->ok = true;
            return 1;
          }
        }
        return 0;
      },
      &search);
  if (!search.ok) throw ProtocolError("mpx: address is not inside any loaded module");
  return search.found;
}

// The loaded module with this build-id, or base 0 if none.
Module module_with_build_id(const std::string& build_id) {
  struct Search {
    const std::string* build_id;
    Module found;
  } search{&build_id, {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        std::string id = build_id_of_module(info);
        if (!id.empty() && id == *s->build_id) {
          s->found = Module{info->dlpi_addr, id, info->dlpi_name ? info->dlpi_name : ""};
          return 1;
        }
        return 0;
      },
      &search);
  return search.found;
}

}  // namespace

std::string build_id_of(const void* address) { return module_containing(reinterpret_cast<std::uintptr_t>(address)).build_id; }

FunctionId identify(ErasedFunction function, Trampoline trampoline) {
  const auto trampoline_address = reinterpret_cast<std::uintptr_t>(trampoline);
  const Module module = module_containing(trampoline_address);
  if (module.build_id.empty()) {
    throw ProtocolError("mpx: module '" + module.path +
                        "' has no GNU build-id, so its functions cannot be sent to other processes (link with "
                        "-Wl,--build-id)");
  }
  FunctionId id;
  id.build_id = module.build_id;
  id.trampoline_offset = trampoline_address - module.base;
  if (function) {
    const auto function_address = reinterpret_cast<std::uintptr_t>(function);
    const Module fmodule = module_containing(function_address);
    if (fmodule.base != module.base) {
      throw ProtocolError("mpx: a target function and its trampoline live in different modules ('" + fmodule.path +
                          "' and '" + module.path + "')");
    }
    id.function_offset = function_address - module.base;
  }
  return id;
}

std::string main_build_id() {
  static const std::string main_id = [] {
    std::string id;
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) -> int {
          *static_cast<std::string*>(data) = build_id_of_module(info);
          return 1;  // the first object is the main executable
        },
        &id);
    return id;
  }();
  return main_id;
}

std::pair<ErasedFunction, Trampoline> resolve(const FunctionId& id) {
  const Module module = module_with_build_id(id.build_id);
  if (module.build_id.empty()) {
    throw ProtocolError("mpx: refusing a call from a different build: the caller's module has build-id " +
                        id.build_id + ", which is not loaded here (this executable's build-id is " +
                        main_build_id() + "); parent and worker must run the same build");
  }
  auto trampoline = reinterpret_cast<Trampoline>(module.base + id.trampoline_offset);
  auto function = id.function_offset ? reinterpret_cast<ErasedFunction>(module.base + id.function_offset) : nullptr;
  return {function, trampoline};
}

}  // namespace mpx
