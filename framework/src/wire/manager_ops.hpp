// The ops of manager_apply (framework/PROTOCOL.md, "Ops of manager_apply"): the names a client sends as `op`. Keep
// the two in step.
#pragma once

#include <algorithm>
#include <iterator>
#include <string_view>

namespace mpx::wire::manager_op {

// any value
inline constexpr std::string_view assign = "assign";
inline constexpr std::string_view add = "add";
inline constexpr std::string_view len = "len";
// maps (and arrays where both have it)
inline constexpr std::string_view get = "get";
inline constexpr std::string_view set = "set";
inline constexpr std::string_view del = "del";
inline constexpr std::string_view pop = "pop";
inline constexpr std::string_view popitem = "popitem";
inline constexpr std::string_view setdefault = "setdefault";
inline constexpr std::string_view update = "update";
inline constexpr std::string_view contains = "contains";
inline constexpr std::string_view keys = "keys";
inline constexpr std::string_view values = "values";
inline constexpr std::string_view items = "items";
inline constexpr std::string_view clear = "clear";
// arrays
inline constexpr std::string_view append = "append";
inline constexpr std::string_view extend = "extend";
inline constexpr std::string_view insert = "insert";
inline constexpr std::string_view getitem = "getitem";
inline constexpr std::string_view setitem = "setitem";
inline constexpr std::string_view delitem = "delitem";
inline constexpr std::string_view index = "index";
inline constexpr std::string_view remove = "remove";
inline constexpr std::string_view count = "count";
inline constexpr std::string_view slice = "slice";
inline constexpr std::string_view set_slice = "set_slice";
inline constexpr std::string_view del_slice = "del_slice";
inline constexpr std::string_view sort = "sort";
inline constexpr std::string_view reverse = "reverse";

inline constexpr std::string_view all[] = {assign, add,      len,     get,     set,     del,       pop,       popitem,
                                           setdefault, update, contains, keys, values, items,   clear,     append,
                                           extend,  insert,   getitem, setitem, delitem, index,     remove,    count,
                                           slice,   set_slice, del_slice, sort, reverse};

inline bool known(std::string_view op) { return std::find(std::begin(all), std::end(all), op) != std::end(all); }

}  // namespace mpx::wire::manager_op
